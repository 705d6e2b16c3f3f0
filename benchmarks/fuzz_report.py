"""The totals of docs/robustness.md: run the two fuzz suites and print their inputs by outcome.

``tests/test_input_fuzz.py`` damages valid user files (PoseTrack17/18/21 annotations and
predictions, box files, experiment YAML, checkpoints, the ``kpdiff evaluate`` command on them);
``tests/test_api_inputs.py`` draws tensors and arguments for the public API. Each input ends in
a ``KpdiffError`` naming the input or in a correct, finite result; anything else fails the run.

    python benchmarks/fuzz_report.py [--examples 300]

``--examples`` is per reader property (CI runs 60); ``--api-examples`` per API property (CI
runs 80; ``DiffPose.predict`` gets half).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=300, help="per reader property")
    parser.add_argument("--api-examples", type=int, default=80, help="per API property")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="kpdiff-fuzz-"))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "KPDIFF_FUZZ_RANDOM": "1",  # new inputs each run (CI replays fixed ones)
        "KPDIFF_FUZZ_EXAMPLES": str(args.examples),
        "KPDIFF_FUZZ_API_EXAMPLES": str(args.api_examples),
        "KPDIFF_FUZZ_REPORT": str(tmp / "readers.json"),
        "KPDIFF_FUZZ_API_REPORT": str(tmp / "api.json"),
    }
    start = time.perf_counter()
    tests = ["tests/test_input_fuzz.py", "tests/test_api_inputs.py"]
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    print(done.stdout.strip().splitlines()[-1])
    if done.returncode != 0:
        print(done.stdout[-4000:], done.stderr[-2000:], sep="\n")
        raise SystemExit("a fuzz test failed")

    readers: dict[str, dict[str, int]] = defaultdict(dict)
    for row in json.loads((tmp / "readers.json").read_text()):
        readers[row["reader"]][row["outcome"]] = row["inputs"]
    outcomes = sorted({o for r in readers.values() for o in r})
    print(f"\nreaders ({args.examples} examples per property, {seconds:.0f} s both suites)\n")
    print("| reader | " + " | ".join(outcomes) + " | inputs |")
    print("| --- |" + " ---: |" * (len(outcomes) + 1))
    totals = defaultdict(int)
    for name, row in sorted(readers.items()):
        cells = [row.get(o, 0) for o in outcomes]
        for o, n in zip(outcomes, cells, strict=True):
            totals[o] += n
        print(f"| {name} | " + " | ".join(map(str, cells)) + f" | {sum(cells)} |")
    print("| **all** | " + " | ".join(str(totals[o]) for o in outcomes)
          + f" | **{sum(totals.values())}** |")  # fmt: skip

    api = json.loads((tmp / "api.json").read_text())
    props = sorted(p for p in api if ":" not in p)
    print("\npublic API\n")
    print("| entry point (property) | KpdiffError naming the argument | finite result | inputs |")
    print("| --- | ---: | ---: | ---: |")
    for p in props:
        print(f"| `{p}` | {api.get(p + ':error', 0)} | {api.get(p + ':ok', 0)} | {api[p]} |")
    errors = sum(api.get(p + ":error", 0) for p in props)
    ok = sum(api.get(p + ":ok", 0) for p in props)
    print(f"| **all** | {errors} | {ok} | **{errors + ok}** |")


if __name__ == "__main__":
    main()
