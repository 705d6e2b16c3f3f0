"""Benchmark kpdiff's Triton kernels against torch eager and torch.compile at DiffPose's shapes.

    python benchmarks/kernels/run.py                  # everything, fp32 and bf16
    python benchmarks/kernels/run.py --quick          # one shape per kernel
    python benchmarks/kernels/run.py --json out.json  # also save the rows

The cases and shapes are in ``kernel_cases.py`` (N = 10 hypotheses × batch 32 = 320 samples,
K = 17 joints, 64×48 heatmaps, the decoder's channel widths). Each row gives the median time
(``triton.testing.do_bench``, L2 flushed between runs) of the torch reference eager, compiled,
and the Triton kernel, the kernel's speed-ups and its achieved bandwidth against the card's peak
(the bytes a perfect kernel must move: every input read once, every output written once). Last,
the whole ``DiffPose.predict`` with and without the kernels.

Needs a CUDA GPU; without one it says so and exits 0 (``compile_check.py`` is what can be
checked without a GPU).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from kernel_cases import Case, add_case_arguments, all_cases

from kpdiff.io import write_json_atomic

# Peak DRAM bandwidth in GB/s by device-name fragment, most specific first (vendor data sheets).
PEAK_GBPS = [
    ("H200", 4800.0),
    ("H100 NVL", 3900.0),
    ("H100 PCIe", 2000.0),
    ("H100", 3350.0),  # SXM5 80 GB HBM3
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB PCIe", 1935.0),
    ("A100", 1555.0),
    ("L40S", 864.0),
    ("A10G", 600.0),
    ("RTX 4090", 1008.0),
]


@dataclass
class Row:
    """One benchmark result; times in milliseconds, NaN where a variant failed."""

    kernel: str
    shape: str
    dtype: str
    eager_ms: float
    compile_ms: float
    triton_ms: float
    gbytes: float

    def speedups(self) -> tuple[float, float]:
        return self.eager_ms / self.triton_ms, self.compile_ms / self.triton_ms


def peak_gbps(device: int = 0) -> tuple[float, str]:
    """The card's peak DRAM bandwidth (GB/s) and where the figure comes from."""
    props = torch.cuda.get_device_properties(device)
    for fragment, gbps in PEAK_GBPS:
        if fragment in props.name:
            return gbps, f"table ({fragment})"
    clock_khz = getattr(props, "memory_clock_rate", 0)
    bus_bits = getattr(props, "memory_bus_width", 0)
    if clock_khz and bus_bits:  # double data rate: 2 transfers per clock
        return 2 * clock_khz * 1e3 * bus_bits / 8 / 1e9, "memory clock × bus width"
    return float("nan"), "unknown (pass --peak-gbps)"


def bench(fn: Callable[[], Any], grad_to_none: list[torch.Tensor] | None = None) -> float:
    """Median milliseconds of ``fn()``, or NaN when it raises (e.g. a compile failure)."""
    from triton.testing import do_bench

    try:
        return float(do_bench(fn, grad_to_none=grad_to_none, return_mode="median"))
    except Exception as e:  # report and go on: one failing variant must not stop the run
        print(f"    ! {getattr(fn, '__name__', 'fn')}: {type(e).__name__}: {e}", file=sys.stderr)
        return float("nan")


def time_case(case: Case) -> Row:
    """Time the case's reference eager and compiled, and its fused path, on the same inputs."""
    args = case.make(torch.device("cuda"))
    grads = [a for a in args if a.requires_grad] or None
    compiled = torch.compile(case.reference, dynamic=False)
    return Row(
        case.kernel, case.shape, case.dtype,
        bench(lambda: case.reference(*args), grads),
        bench(lambda: compiled(*args), grads),
        bench(lambda: case.fused(*args), grads),
        case.ideal_bytes / 1e9,
    )  # fmt: skip


def predict_rows(dtypes: list[str]) -> list[str]:
    """``DiffPose.predict`` on a batch of 32 clips with and without the kernels."""
    try:
        from kpdiff.diffpose import DiffPose
    except ImportError as e:
        return [f"DiffPose.predict: skipped, kpdiff.diffpose not importable ({e})"]
    from kpdiff.kernels import use_kernels

    lines = []
    try:
        model = DiffPose().cuda().eval()
        h, w = model.config.input_size
        clips = torch.randn(32, 2 * model.config.delta + 1, 3, h, w, device="cuda")
        for dtype in dtypes:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == "bf16"):
                cond = model.condition(clips)
                for label, kw in (
                    ("predict(clips)", {"clips": clips}),
                    ("predict(cond)", {"cond": cond}),
                ):
                    times = {}
                    for on in (False, True):
                        with use_kernels(on):
                            times[on] = wall_ms(lambda kw=kw: model.predict(**kw))
                    lines.append(
                        f"DiffPose.{label} [{dtype}, B=32, N=10, 4 steps]: without kernels "
                        f"{times[False]:.2f} ms, with {times[True]:.2f} ms, "
                        f"speed-up ×{times[False] / times[True]:.2f}"
                    )
    except Exception as e:
        lines.append(f"DiffPose.predict: failed ({type(e).__name__}: {e})")
    return lines


def wall_ms(fn: Callable[[], Any], warmup: int = 3, reps: int = 10) -> float:
    """Median wall time of ``fn()`` in ms, synchronising the GPU around each call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[len(times) // 2]


def table(rows: list[Row], peak: float) -> str:
    head = (
        "| kernel | shape | dtype | eager ms | compile ms | triton ms | × eager | × compile "
        "| GB/s | % peak |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        vs_eager, vs_compile = r.speedups()
        gbps = r.gbytes / (r.triton_ms / 1e3)
        lines.append(
            f"| {r.kernel} | {r.shape} | {r.dtype} | {r.eager_ms:.3f} | {r.compile_ms:.3f} | "
            f"{r.triton_ms:.3f} | {vs_eager:.2f} | {vs_compile:.2f} | {gbps:.0f} | "
            f"{100 * gbps / peak:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status (0 also when there is no GPU)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_case_arguments(parser)
    parser.add_argument("--peak-gbps", type=float, help="override the card's peak bandwidth")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--no-predict", action="store_true", help="skip DiffPose.predict")
    args = parser.parse_args(argv)

    if not torch.cuda.is_available():
        print(
            "benchmarks/kernels/run.py needs a CUDA GPU and none is available: nothing measured. "
            "benchmarks/kernels/compile_check.py compiles the kernels for a GPU without one."
        )
        return 0
    try:
        import triton
    except ImportError:
        print("benchmarks/kernels/run.py needs triton (pip install triton): nothing measured.")
        return 0

    peak, source = (args.peak_gbps, "--peak-gbps") if args.peak_gbps else peak_gbps()
    name = torch.cuda.get_device_name()
    print(f"# {name}, peak {peak:.0f} GB/s ({source}), torch {torch.__version__}, "
          f"triton {triton.__version__}\n")  # fmt: skip
    rows = [time_case(case) for case in all_cases(args.dtype, args.quick)]
    print(table(rows, peak))
    extra = [] if args.no_predict else predict_rows(args.dtype)
    if extra:
        print("\n" + "\n".join(extra))
    if args.json:
        rows_json = [  # NaN (a failed variant) is not JSON: write null
            {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(r).items()}
            for r in rows
        ]
        peak_json = None if math.isnan(peak) else peak
        payload = {"device": name, "peak_gbps": peak_json, "rows": rows_json, "predict": extra}
        write_json_atomic(payload, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
