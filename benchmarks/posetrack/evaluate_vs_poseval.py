"""``kpdiff evaluate`` beside the official poseval, end to end, on the same PoseTrack18 files.

Writes ``eval_speed.py``'s synthetic set (default 170 videos x 60 frames, the size of
PoseTrack18 val) as per-video PoseTrack18 files with PoseTrack's video names and image ids, then
runs, each as a fresh process and one after the other:

- poseval's AP evaluation: ``load_data_dir`` + ``evaluateAP`` + ``printTable``, what
  ``python -m poseval.evaluate --evalPoseEstimation`` runs (without importing its tracking part,
  which needs motmetrics);
- ``kpdiff evaluate --gt GT --pred PRED`` (``python -m kpdiff.cli``).

It prints both tables, each tool's wall time and peak resident memory (``os.wait4``'s
``ru_maxrss`` of the child), their ratio, and whether every printed number agrees.

    python benchmarks/posetrack/evaluate_vs_poseval.py [--videos 170] [--repeats 3]
        [--poseval ../shared/tools/poseval] [--workdir DIR]

Target (issue 17): kpdiff <= 1.5 s and <= 300 MB, >= 20x faster than poseval.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from eval_speed import make_dataset

from kpdiff.data.posetrack import write_posetrack18, write_posetrack18_predictions

REPO = Path(__file__).resolve().parents[2]
DEFAULT_POSEVAL = REPO.parent / "shared" / "tools" / "poseval"

POSEVAL_DRIVER = """
import sys, tempfile
sys.path.insert(0, sys.argv[1])
from poseval import eval_helpers
from poseval.evaluateAP import evaluateAP
gt, pr = eval_helpers.load_data_dir(["", sys.argv[2] + "/", sys.argv[3] + "/"])
with tempfile.TemporaryDirectory() as out:
    ap = evaluateAP(gt, pr, out, False, False)[0]
eval_helpers.printTable(ap)
"""


def write_files(root: Path, videos: int, frames: int, seed: int) -> tuple[Path, Path, int]:
    """The set as PoseTrack18 files under ``root/gt`` and ``root/pred``; returns their bytes."""
    gt, pred = make_dataset(videos, frames, seed)
    size = 0
    for v, (g, p) in enumerate(zip(gt, pred, strict=True)):
        name = f"{900000 + v + 1:06d}_mpii_test"  # PoseTrack's scheme: vid_id before the "_"
        for video in (g, p):
            video.name = name
            for f, frame in enumerate(video.frames):
                frame.image_path = f"images/val/{name}/{f:06d}.jpg"
                frame.image_id = 10_000_000_000 + (900000 + v + 1) * 10_000 + f
        size += write_posetrack18(g, root / "gt" / f"{name}.json").stat().st_size
        size += write_posetrack18_predictions(p, root / "pred" / f"{name}.json").stat().st_size
    return root / "gt", root / "pred", size


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """``(seconds, peak RSS in MB, stdout)`` of one child process (exits on failure)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak, not all children's
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            sys.exit(f"{cmd[:3]} failed ({proc.returncode}): {err.read().decode()[-2000:]}")
        return seconds, usage.ru_maxrss / 1024, out.read().decode()


def numbers(table: str) -> list[float]:
    """The numbers of a printed AP table's last line (the values row)."""
    rows = [line for line in table.strip().splitlines() if re.search(r"\d", line)]
    return [float(x) for x in re.findall(r"-?\d+\.\d+", rows[-1])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=170)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each tool (best counts)")
    ap.add_argument("--poseval", type=Path, default=DEFAULT_POSEVAL)
    ap.add_argument("--workdir", type=Path, default=None, help="where the files go (temp)")
    a = ap.parse_args()
    if not (a.poseval / "poseval" / "evaluateAP.py").is_file():
        sys.exit(f"--poseval: {a.poseval} is not the poseval toolkit (no poseval/evaluateAP.py)")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    with tempfile.TemporaryDirectory(dir=a.workdir) as tmp:
        gt, pred, size = write_files(Path(tmp), a.videos, a.frames, a.seed)
        print(f"{a.videos} videos x {a.frames} frames, {size / 1e6:.0f} MB of PoseTrack18 JSON")
        tools = {
            "poseval": [sys.executable, "-c", POSEVAL_DRIVER, str(a.poseval), str(gt), str(pred)],
            "kpdiff": [
                *(sys.executable, "-m", "kpdiff.cli", "evaluate"),
                *("--gt", str(gt), "--pred", str(pred)),
            ],
        }
        best: dict[str, tuple[float, float, str]] = {}
        for _ in range(a.repeats):
            for name, cmd in tools.items():  # interleaved: both see the same machine load
                run = timed(cmd, env)
                if name not in best or run[0] < best[name][0]:
                    best[name] = (run[0], max(run[1], best.get(name, run)[1]), run[2])
    for name, (_, _, out) in best.items():
        print(f"--- {name}")
        print(out.strip())
    print(f"--- side by side (best of {a.repeats} runs each; peak RSS of the child process)")
    for name, (seconds, mb, _) in best.items():
        print(f"{name:8s} {seconds:7.2f} s  {mb:7.0f} MB")
    p, k = best["poseval"], best["kpdiff"]
    print(f"kpdiff is {p[0] / k[0]:.1f}x faster and uses {p[1] / k[1]:.1f}x less memory")
    same = numbers(p[2])[:8] == numbers(k[2])[:8]
    print(f"same numbers (Head..Total / Mean): {'yes' if same else 'NO'}")
    print(f"  poseval {numbers(p[2])[:8]}\n  kpdiff  {numbers(k[2])[:8]}")


if __name__ == "__main__":
    main()
