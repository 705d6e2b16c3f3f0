"""CPU speed of the exported sampler (numpy + onnxruntime) against torch eager, side by side.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/export_speed.py            # both presets
    .venv/bin/python benchmarks/export_speed.py --presets diffpose-tiny --repeats 20 --threads 2

Each preset gets random weights (seed 0), is exported with ``kpdiff.export.export_onnx`` to a
temporary folder, and then ``DiffPose.predict`` and ``OnnxPoseSampler.predict`` run on the same
clips and the same noise (N = 10, 4 steps, batch 1 by default), interleaved repeat by repeat
after warm-up runs (a busy machine slows both alike); the table reports medians and minima. Both
backends use ``--threads`` threads (torch.set_num_threads, onnxruntime's intra-op threads). The
largest keypoint difference between the two on that noise is printed too.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time

import numpy as np
import onnxruntime
import torch
from inference import interleaved_times, summary  # benchmarks/inference.py

from kpdiff.diffpose import PRESETS, DiffPose
from kpdiff.export import export_onnx
from kpdiff.io import write_json_atomic
from kpdiff.onnx_sampler import OnnxPoseSampler


def bench_preset(
    name: str, *, batch: int, num_samples: int, steps: int, repeats: int, warmup: int,
    threads: int,
) -> dict:  # fmt: skip
    torch.manual_seed(0)
    model = DiffPose.from_preset(name).eval()
    c = model.config
    g = torch.Generator().manual_seed(0)
    clips = torch.randn(batch, 2 * c.delta + 1, 3, *c.input_size, generator=g)
    noise = torch.randn(num_samples * batch, c.num_keypoints, *c.heatmap_size,
                        generator=torch.Generator().manual_seed(1))  # fmt: skip
    clips_np, noise_np = clips.numpy(), noise.numpy()
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        export_onnx(model, folder)
        export_s = time.perf_counter() - start
        sampler = OnnxPoseSampler(folder, threads=threads)

        def eager() -> object:
            return model.predict(clips, num_samples=num_samples, steps=steps,
                                 generator=torch.Generator().manual_seed(1))  # fmt: skip

        def onnx() -> object:
            return sampler.predict(clips_np, num_samples=num_samples, steps=steps, noise=noise_np)

        diff = float(np.abs(onnx().keypoints - eager().keypoints.numpy()).max())
        raw = interleaved_times(
            {"torch eager": eager, "onnxruntime": onnx}, repeats=repeats, warmup=warmup,
            device=torch.device("cpu"),
        )  # fmt: skip
    return {
        "preset": name,
        "export_s": export_s,
        "max_keypoint_diff_px": diff,
        "seconds": {k: summary(v) for k, v in raw.items()},
        "raw": raw,
    }


def table(results: list[dict], batch: int) -> str:
    lines = [
        "| model | backend | ms / clip, median (min) | clips / s (median) | vs torch |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for r in results:
        base = r["seconds"]["torch eager"][0]
        for backend, (median, best) in r["seconds"].items():
            lines.append(
                f"| {r['preset']} | {backend} | {1e3 * median / batch:.1f} "
                f"({1e3 * best / batch:.1f}) | {batch / median:.2f} | {base / median:.2f}× |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["diffpose-tiny", "diffpose-b"],
                        choices=sorted(PRESETS))  # fmt: skip
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of both backends")
    parser.add_argument("--batch", type=int, default=1, help="clips per call (default: 1)")
    parser.add_argument("-n", "--num-samples", type=int, default=10)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    machine = (
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}, {args.threads} thread(s) per backend"
    )
    print(f"# DiffPose predict, N = {args.num_samples}, {args.steps} steps, batch "
          f"{args.batch}, CPU ({machine})\n", flush=True)  # fmt: skip
    results = []
    for name in args.presets:
        r = bench_preset(
            name, batch=args.batch, num_samples=args.num_samples, steps=args.steps,
            repeats=args.repeats, warmup=args.warmup, threads=args.threads,
        )  # fmt: skip
        results.append(r)
        print(f"{name}: exported in {r['export_s']:.0f} s; max |keypoints onnx − eager| on the "
              f"same noise = {r['max_keypoint_diff_px']:.2g} px", flush=True)  # fmt: skip
    print("\n" + table(results, args.batch))
    out = {"machine": machine, "args": vars(args), "results": results}
    if args.json:
        write_json_atomic(out, args.json)
    return out


if __name__ == "__main__":
    main()
