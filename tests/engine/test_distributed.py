"""DDP through torchrun (2 processes, gloo on CPU): identical weights on both ranks, files from
rank 0 only, exact resume with per-rank random streams, evaluation with an empty shard."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist
from engine_helpers import HERE, files_under, subprocess_env

TORCHRUN = Path(sys.executable).parent / "torchrun"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not TORCHRUN.is_file(), reason="torchrun is not installed"),
    pytest.mark.skipif(
        not (dist.is_available() and dist.is_gloo_available()), reason="no gloo backend"
    ),
]


@pytest.fixture(scope="module")
def reports(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    command = [
        str(TORCHRUN), "--standalone", "--nproc_per_node=2",
        str(HERE / "ddp_script.py"), str(tiny_data), str(out),
    ]  # fmt: skip
    done = subprocess.run(
        command, env=subprocess_env(), capture_output=True, text=True, timeout=240, cwd=out
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, [json.loads((out / f"report-rank{r}.json").read_text()) for r in (0, 1)]


def test_both_ranks_end_with_identical_weights(reports):
    _, (r0, r1) = reports
    assert r0["full"]["weights"] == r1["full"]["weights"]
    assert r0["full"]["losses"] == r1["full"]["losses"]  # the mean over ranks, on every rank
    assert sorted(map(int, r0["full"]["losses"])) == list(range(1, 10))
    assert r0["full"]["best"] == r1["full"]["best"] is not None  # broadcast from rank 0


def test_only_rank_0_writes_files(reports):
    out, _ = reports
    assert not (out / "full-rank1").exists()
    written = files_under(out / "full-rank0")
    assert "metrics.jsonl" in written and "experiment.yaml" in written
    assert "checkpoints/latest" in written and "best/model.safetensors" in written


def test_resumed_ddp_run_equals_the_uninterrupted_one(reports):
    _, (r0, r1) = reports
    for r in (r0, r1):
        assert r["resumed"]["losses"] == r["full"]["losses"]
        assert r["resumed"]["weights"] == r["full"]["weights"]
        assert r["resumed"]["best"] == r["full"]["best"]


def test_evaluation_with_an_empty_shard(reports):
    _, (r0, r1) = reports
    assert r1["eval"] is None
    assert set(r0["eval"]) == {"(1, 1)", "(2, 1)"}
