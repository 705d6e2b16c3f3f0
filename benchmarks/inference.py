"""Inference cost of the DiffPose presets, batch 1: time per clip, FLOPs per stage, and the price
of the ensemble, time(N=10, steps=4) / time(N=1, steps=1), measured side by side.

    .venv/bin/python benchmarks/inference.py                       # every preset, CPU (+ CUDA)
    .venv/bin/python benchmarks/inference.py --presets diffpose-tiny --repeats 20 --json out.json

Timings interleave the measured functions repeat by repeat (so a busy machine slows all of them
alike) after warm-up runs, and report medians. FLOPs come from ``torch.utils.flop_counter`` with
timm's fused attention switched off while counting (the counter does not see the CPU fused
kernel); 1 multiply-add = 2 FLOPs. The train step (the tiny preset, batch 16: forward, backward
and an AdamW step) is measured on the CPU too.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time
from collections.abc import Callable, Iterator

import torch
from torch.utils.flop_counter import FlopCounterMode

from kpdiff.diffpose import PRESETS, DiffPose
from kpdiff.io import write_json_atomic
from kpdiff.sampling import repeat_cond


@contextlib.contextmanager
def unfused_attention(model: torch.nn.Module) -> Iterator[None]:
    """Switch timm's fused attention off, so that the FLOP counter sees q·kᵀ and attn·v."""
    mods = [m for m in model.modules() if hasattr(m, "fused_attn")]
    saved = [m.fused_attn for m in mods]
    for m in mods:
        m.fused_attn = False
    try:
        yield
    finally:
        for m, s in zip(mods, saved, strict=True):
            m.fused_attn = s


def count_flops(model: torch.nn.Module, fn: Callable[[], object]) -> int:
    with unfused_attention(model), FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return counter.get_total_flops()


def interleaved_times(
    fns: dict[str, Callable[[], object]], *, repeats: int, warmup: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds of each function, run interleaved ``repeats`` times after ``warmup`` rounds: run
    i of every function happens in the same round, side by side."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def summary(ts: list[float]) -> tuple[float, float]:
    """``(median, min)``: on a shared machine the minimum is the steadier estimate."""
    return statistics.median(ts), min(ts)


def bench_preset(name: str, device: torch.device, *, repeats: int, warmup: int) -> dict:
    torch.manual_seed(0)
    model = DiffPose.from_preset(name).eval().to(device)
    c = model.config
    clips = torch.randn(1, 2 * c.delta + 1, 3, *c.input_size, device=device)
    with torch.no_grad():
        feat = model.encoder(clips)
        cond = model.decoder.prepare(feat)
    cond10 = repeat_cond(cond, 10)
    x1 = torch.randn(1, c.num_keypoints, *c.heatmap_size, device=device)
    x10, t1, t10 = x1.repeat(10, 1, 1, 1), torch.full((1,), 999), torch.full((10,), 999)
    t1, t10 = t1.to(device), t10.to(device)
    flops = {
        "encoder": count_flops(model, lambda: model.encoder(clips)),
        "pyramid": count_flops(model, lambda: model.decoder.prepare(feat)),
        "decoder_step_n1": count_flops(model, lambda: model.decoder(x1, t1, cond)),
        "decoder_step_n10": count_flops(model, lambda: model.decoder(x10, t10, cond10)),
    }

    def run(fn: Callable[[], object]) -> Callable[[], object]:
        return lambda: torch.no_grad()(fn)()

    raw = interleaved_times(
        {
            "encoder": run(lambda: model.encoder(clips)),
            "pyramid": run(lambda: model.decoder.prepare(feat)),
            "decoder_step_n10": run(lambda: model.decoder(x10, t10, cond10)),
            "predict_n1_s1": lambda: model.predict(clips, num_samples=1, steps=1),
            "predict_n10_s4": lambda: model.predict(clips, num_samples=10, steps=4),
        },
        repeats=repeats,
        warmup=warmup,
        device=device,
    )
    times = {k: summary(v) for k, v in raw.items()}
    # The ratio of each round's pair, measured back to back, then the median over rounds.
    pairs = zip(raw["predict_n10_s4"], raw["predict_n1_s1"], strict=True)
    ratio = statistics.median(a / b for a, b in pairs)
    ratio_of_min = times["predict_n10_s4"][1] / times["predict_n1_s1"][1]
    return {
        "preset": name,
        "device": str(device),
        "flops": flops,
        "seconds": times,
        "ratio": ratio,
        "ratio_of_min": ratio_of_min,
    }


def bench_train_step(name: str, *, batch: int, repeats: int, warmup: int) -> tuple[float, float]:
    """``(median, min)`` seconds of one CPU training step (loss, backward, AdamW) at ``batch``."""
    torch.manual_seed(0)
    model = DiffPose.from_preset(name).train()
    c = model.config
    clips = torch.randn(batch, 2 * c.delta + 1, 3, *c.input_size)
    heatmaps = torch.rand(batch, c.num_keypoints, *c.heatmap_size)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model.loss(clips, heatmaps).backward()
        opt.step()

    cpu = torch.device("cpu")
    times = interleaved_times({"train": step}, repeats=repeats, warmup=warmup, device=cpu)
    return summary(times["train"])


def report(result: dict) -> str:
    g = {k: v / 1e9 for k, v in result["flops"].items()}

    def ms(key: str) -> str:
        median, best = result["seconds"][key]
        return f"{1e3 * median:.1f} ({1e3 * best:.1f})"

    return "\n".join(
        [
            f"### {result['preset']} on {result['device']}",
            "| stage | GFLOPs | ms, median (min) |",
            "| --- | ---: | ---: |",
            f"| encoder (once per clip) | {g['encoder']:.2f} | {ms('encoder')} |",
            f"| pyramid (once per clip) | {g['pyramid']:.3f} | {ms('pyramid')} |",
            f"| decoder step, N=1 | {g['decoder_step_n1']:.3f} | |",
            f"| decoder step, N=10 | {g['decoder_step_n10']:.2f} | {ms('decoder_step_n10')} |",
            f"| predict N=1, steps=1 | | {ms('predict_n1_s1')} |",
            f"| predict N=10, steps=4 | | {ms('predict_n10_s4')} |",
            f"\nratio time(N=10, steps=4) / time(N=1, steps=1) = **{result['ratio']:.2f}** "
            f"(median of side-by-side pairs; {result['ratio_of_min']:.2f} from the minima); "
            "one N=10 decoder step = "
            f"{100 * g['decoder_step_n10'] / g['encoder']:.1f}% of the encoder's FLOPs\n",
        ]
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=sorted(PRESETS), choices=sorted(PRESETS))
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu (+ cuda)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--train-presets", nargs="*", default=["diffpose-tiny"])
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

    machine = (
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads"
    )
    if torch.cuda.is_available():
        machine += f", {torch.cuda.get_device_name()}"
    print(f"# DiffPose inference benchmark, batch 1 ({machine})\n")
    results: dict = {"machine": machine, "inference": [], "train_step_s": {}}
    for device in devices:
        for name in args.presets:
            r = bench_preset(name, torch.device(device), repeats=args.repeats, warmup=args.warmup)
            results["inference"].append(r)
            print(report(r), flush=True)
    for name in args.train_presets:
        median, best = bench_train_step(name, batch=args.train_batch, repeats=10, warmup=3)
        results["train_step_s"][name] = (median, best)
        print(
            f"train step, {name}, batch {args.train_batch}, CPU: {1e3 * median:.0f} ms median "
            f"({1e3 * best:.0f} ms min)"
        )
    if args.json:
        write_json_atomic(results, args.json)
    return results


if __name__ == "__main__":
    main()
