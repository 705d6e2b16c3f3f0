"""Training speed of the demo's recipe for each split of the cores between torch and the loader.

For each ``(torch threads, DataLoader workers)`` pair it trains the demo's model for ``--steps``
steps on the demo's data (no validation) and prints the samples/s of the steps after the first
``--warmup``; the pairs run one after the other, round after round (``--rounds``), so that a
change in the machine's load hits them alike. The demo uses the fastest pair::

    python benchmarks/demo_speed.py --steps 120 --rounds 2
    python benchmarks/demo_speed.py --pairs 1,1 2,0 --json speed.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from kpdiff.engine.data import prepare_datasets
from kpdiff.engine.demo import demo_config
from kpdiff.engine.train import train
from kpdiff.io import write_json_atomic


def measure(
    data_root: str, threads: int, workers: int, steps: int, warmup: int, quick: bool = False
) -> float:
    """Samples/s of the demo's training steps after ``warmup`` (wall clock, from the log)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = demo_config(tmp, quick=quick)
        cfg.data.root = data_root
        cfg.data.workers = workers
        cfg.runtime.threads = threads
        cfg.runtime.progress = False
        cfg.runtime.log_every = 1
        cfg.optim.max_steps = steps
        cfg.optim.epochs = max(cfg.optim.epochs, steps)  # small data: enough epochs
        datasets = dataclasses.replace(prepare_datasets(cfg), val=None)
        train(cfg, datasets=datasets)
        rows = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").open()]
        times = [r["time"] for r in rows if "loss" in r]
    return cfg.optim.batch_size * (len(times) - 1 - warmup) / (times[-1] - times[warmup])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="outputs/demo/data", help="the demo's data folder")
    parser.add_argument("--pairs", nargs="+", default=["1,0", "1,1", "2,0", "2,1"],
                        help="threads,workers pairs")  # fmt: skip
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--warmup", type=int, default=20, help="steps not timed")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--quick", action="store_true", help="the quick demo's data (smoke)")
    args = parser.parse_args(argv)
    pairs = [tuple(int(v) for v in p.split(",")) for p in args.pairs]
    rates: dict[str, list[float]] = {f"{t},{w}": [] for t, w in pairs}
    start = time.perf_counter()
    for _ in range(args.rounds):
        for t, w in pairs:
            rate = measure(args.data, t, w, args.steps, args.warmup, args.quick)
            rates[f"{t},{w}"].append(rate)
            print(f"threads {t}, workers {w}: {rate:.1f} samples/s", flush=True)
    torch.set_num_threads(1)
    print("\n| torch threads | loader workers | samples/s (median) |")
    print("| ---: | ---: | ---: |")
    for key, values in rates.items():
        t, w = key.split(",")
        print(f"| {t} | {w} | {statistics.median(values):.1f} |")
    print(f"({time.perf_counter() - start:.0f} s)")
    if args.json:
        write_json_atomic({"rates": rates, "steps": args.steps, "warmup": args.warmup}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
