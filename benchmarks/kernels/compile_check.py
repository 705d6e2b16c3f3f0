"""Compile kpdiff's Triton kernels for a GPU without one, and report what the compiler made.

    python benchmarks/kernels/compile_check.py                    # sm_90 (H100), fp32 and bf16
    python benchmarks/kernels/compile_check.py --arch 80 90 --json compile.json

This measures no time. It checks what can be checked without a GPU, for every case of
``kernel_cases.py`` (DiffPose's shapes):

- the kernels compile for the target (the interpreter accepts programs the compiler rejects);
- the compiled code: registers per thread, spills (local memory), shared memory, theoretical
  occupancy, and the widest global load and store (128 bits: vectorised accesses);
- memory traffic: the bytes the fused kernel must move, against the bytes torch eager moves for
  the reference (counted op by op: every aten op that is not a view reads its inputs and
  writes its outputs once). For a memory-bound kernel that runs near peak bandwidth, the ratio
  bounds the speed-up over eager; it is a count, not a timing.

How: the real wrappers run on ``meta`` tensors (shapes and strides, no memory). Triton's JIT
binds and specialises the arguments as it does on a GPU (16-byte alignment, sizes divisible
by 16, strides of 1), and compiles for the chosen target instead of launching. ptxas and
cuobjdump come with triton's wheel. Run it without ``TRITON_INTERPRET``.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from kernel_cases import Case, add_case_arguments, all_cases
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from kpdiff.io import write_json_atomic

H100_SXM_GBPS = 3350.0  # HBM3, vendor data sheet
# Per-SM limits by compute capability (CUDA programming guide): warps, 32-bit registers,
# shared memory per block (bytes), resident blocks.
SM_LIMITS = {80: (64, 65536, 166912, 32), 86: (48, 65536, 101376, 16), 89: (48, 65536, 101376, 24)}
SM_LIMITS |= {90: (64, 65536, 232448, 32)}
# Views and fresh allocations move no data.
FREE_OPS = {"empty", "empty_like", "empty_strided", "detach", "alias", "lift_fresh", "t"}


@dataclass
class Launch:
    """One compiled kernel launch, as the compiler built it."""

    name: str
    programs: int
    num_warps: int
    registers: int
    spill_bytes: int
    shared_bytes: int
    load_bits: int  # widest global load per thread, 0 when none
    store_bits: int
    occupancy: float  # resident warps / maximum, from registers, shared memory and block limits


@dataclass
class Report:
    """One case at one target."""

    kernel: str
    shape: str
    dtype: str
    arch: int
    ideal_bytes: int
    eager_bytes: int
    eager_ops: int
    launches: list[Launch] = field(default_factory=list)
    error: str | None = None

    @property
    def traffic_ratio(self) -> float:
        return self.eager_bytes / self.ideal_bytes


class _StubDriver:
    """Stands in for the CUDA driver: names the target and a device and stream for it.

    The device number is the architecture, because triton caches its binder, target and
    compiled kernels per device: a second target must not find the first one's kernels.
    """

    def __init__(self, arch: int) -> None:
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", arch, 32)

    def get_current_target(self) -> Any:
        return self.target

    def get_current_device(self) -> int:
        return self.target.arch

    def get_current_stream(self, device: int | None = None) -> int:
        return 0


@contextmanager
def compile_only(arch: int) -> Iterator[list[tuple[str, Any, tuple[int, ...]]]]:
    """Within this block, launching a ``@triton.jit`` kernel compiles it for ``sm_<arch>``.

    Yields the list of ``(kernel name, CompiledKernel, grid)`` that the block's launches fill.
    """
    from triton.runtime import driver
    from triton.runtime.jit import JITFunction

    compiled: list[tuple[str, Any, tuple[int, ...]]] = []
    launch = JITFunction.run

    def compile_instead(self: Any, *args: Any, grid: Any, warmup: bool, **kwargs: Any) -> Any:
        kernel = launch(self, *args, grid=grid, warmup=True, **kwargs)
        compiled.append((self.__name__, kernel, tuple(grid)))
        return kernel

    previous = driver._active  # None until something asked for the real driver
    driver.set_active(_StubDriver(arch))
    JITFunction.run = compile_instead  # type: ignore[method-assign]
    try:
        yield compiled
    finally:
        JITFunction.run = launch  # type: ignore[method-assign]
        driver.set_active(previous)


def _resources(cubin: bytes) -> dict[str, int]:
    """``REG``, ``LOCAL``, ``SHARED``… of the one function in ``cubin`` (cuobjdump's count)."""
    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as fh:
            fh.write(cubin)
        text = subprocess.run(
            [tool, "--dump-resource-usage", path], capture_output=True, text=True, check=True
        ).stdout
    found = re.findall(r"\b([A-Z]+):(\d+)", text.split("Function", 1)[-1])
    return {key: int(value) for key, value in found}


def _widest(ptx: str, op: str) -> int:
    """Widest ``ld.global`` / ``st.global`` in bits, e.g. ``ld.global.v4.b32`` → 128."""
    widths = [
        int(vec or 1) * int(bits)
        for vec, bits in re.findall(rf"\b{op}\.global(?:\.[a-z]+)*?(?:\.v(\d))?\.[bfsu](\d+)", ptx)
    ]
    return max(widths, default=0)


def _occupancy(arch: int, num_warps: int, registers: int, shared: int) -> float:
    """Theoretical occupancy: resident warps per SM over the maximum (256-register granules)."""
    max_warps, max_regs, max_shared, max_blocks = SM_LIMITS.get(arch, SM_LIMITS[90])
    regs_per_warp = math.ceil(max(registers, 1) * 32 / 256) * 256
    blocks = min(
        max_blocks,
        (max_regs // regs_per_warp) // num_warps,
        max_shared // shared if shared else max_blocks,
        max_warps // num_warps,
    )
    return blocks * num_warps / max_warps


def describe(arch: int, name: str, kernel: Any, grid: tuple[int, ...]) -> Launch:
    """What the compiler made of one launch."""
    res = _resources(kernel.asm["cubin"])
    warps = kernel.metadata.num_warps
    ptx = kernel.asm["ptx"]
    return Launch(
        name=name,
        programs=math.prod(grid),
        num_warps=warps,
        registers=res.get("REG", 0),
        spill_bytes=res.get("LOCAL", 0) + res.get("STACK", 0),
        shared_bytes=res.get("SHARED", 0),
        load_bits=_widest(ptx, "ld"),
        store_bits=_widest(ptx, "st"),
        occupancy=_occupancy(arch, warps, res.get("REG", 0), res.get("SHARED", 0)),
    )


class _Traffic(TorchDispatchMode):
    """Counts the aten ops run and the bytes they read and write (views and allocations: 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0
        self.bytes = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if func._schema.name.split("::")[-1] in FREE_OPS or func.is_view:
            return out
        tensors = [t for t in tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
        self.ops += 1
        self.bytes += sum(_touched_bytes(t) for t in tensors)
        return out


def _touched_bytes(t: torch.Tensor) -> int:
    """Bytes of the distinct elements of ``t`` (a broadcast dim, stride 0, counts once)."""
    return t.element_size() * math.prod(
        n for n, s in zip(t.shape, t.stride(), strict=True) if s != 0
    )


def eager_traffic(reference: Callable[..., Any], args: tuple[torch.Tensor, ...]) -> tuple[int, int]:
    """``(bytes, ops)`` that torch eager moves running ``reference(*args)`` on meta tensors."""
    with _Traffic() as counter:
        reference(*args)
    return counter.bytes, counter.ops


def check_case(case: Case, arch: int) -> Report:
    """Compile ``case.fused`` for ``sm_<arch>`` and count ``case.reference``'s traffic."""
    meta = torch.device("meta")
    eager_bytes, eager_ops = eager_traffic(case.reference, case.make(meta))
    report = Report(
        case.kernel, case.shape, case.dtype, arch, case.ideal_bytes, eager_bytes, eager_ops
    )
    try:
        with compile_only(arch) as compiled:
            case.fused(*case.make(meta))
        report.launches = [describe(arch, *launch) for launch in compiled]
    except Exception as e:  # report and go on: one failing kernel must not hide the others
        traceback.print_exc(file=sys.stderr)
        report.error = f"{type(e).__name__}: {e}".splitlines()[0]
    return report


def table(reports: list[Report], peak_gbps: float) -> str:
    lines = [
        "| kernel | shape | dtype | sm | launch: regs, spill B, smem B, ld/st bits, occupancy "
        "| ideal MB | eager MB (ops) | traffic ratio | µs at 70 % peak |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        launches = "; ".join(
            f"{x.name.strip('_')}: {x.registers}, {x.spill_bytes}, {x.shared_bytes}, "
            f"{x.load_bits}/{x.store_bits}, {100 * x.occupancy:.0f} %"
            for x in r.launches
        )
        budget = r.ideal_bytes / (0.7 * peak_gbps * 1e9) * 1e6
        lines.append(
            f"| {r.kernel} | {r.shape} | {r.dtype} | {r.arch} | {r.error or launches} | "
            f"{r.ideal_bytes / 1e6:.1f} | {r.eager_bytes / 1e6:.1f} ({r.eager_ops}) | "
            f"{r.traffic_ratio:.2f} | {budget:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Compile and report; exit status 1 when a kernel fails to compile, 0 otherwise."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", type=int, default=[90], help="e.g. 80 90")
    add_case_arguments(parser)
    parser.add_argument(
        "--peak-gbps",
        type=float,
        default=H100_SXM_GBPS,
        help=f"peak bandwidth for the time budget column (default {H100_SXM_GBPS:g}, H100 SXM)",
    )
    parser.add_argument("--json", help="also write the reports to this file")
    args = parser.parse_args(argv)

    if os.environ.get("TRITON_INTERPRET") == "1":
        print("compile_check.py compiles for a GPU: unset TRITON_INTERPRET.", file=sys.stderr)
        return 2
    try:
        import triton
    except ImportError:
        print("compile_check.py needs triton (pip install triton): nothing checked.")
        return 0

    print(f"# triton {triton.__version__}, torch {torch.__version__}: compiled, not run\n")
    cases = all_cases(args.dtype, args.quick)
    reports = [check_case(case, arch) for arch in args.arch for case in cases]
    print(table(reports, args.peak_gbps))
    if args.json:
        payload = [asdict(r) | {"traffic_ratio": r.traffic_ratio} for r in reports]
        write_json_atomic({"triton": triton.__version__, "reports": payload}, args.json)
    failed = [r for r in reports if r.error]
    for r in failed:
        print(f"! {r.kernel} {r.shape} {r.dtype} sm_{r.arch}: {r.error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
