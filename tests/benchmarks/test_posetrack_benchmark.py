"""benchmarks/posetrack: the smoke run on real PoseTrack18 files, --help, evaluate, prepare."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kpdiff.data import SyntheticConfig, build_synthetic_dataset, read_detections, read_posetrack
from kpdiff.diffpose import DiffPose
from kpdiff.errors import KpdiffInputError

FOLDER = Path(__file__).resolve().parents[2] / "benchmarks" / "posetrack"
SAMPLE = Path(
    os.environ.get(
        "KPDIFF_POSETRACK18_SAMPLE",
        Path(__file__).resolve().parents[3] / "shared" / "data" / "posetrack18_sample",
    )
)
COLUMNS = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"kpdiff_posetrack_{name}", FOLDER / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


run = _load("run")
prepare = _load("prepare")
smoke = _load("smoke")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 2-video × 6-frame synthetic set and a freshly initialised tiny model."""
    tmp = tmp_path_factory.mktemp("posetrack_bench")
    root = build_synthetic_dataset(tmp / "data", SyntheticConfig(num_videos=2, frames_per_video=6))
    torch.manual_seed(0)
    DiffPose.from_preset("diffpose-tiny").save_pretrained(tmp / "model")
    return root, tmp / "model"


def _table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("kpdiff  N=")]


def test_help_works(capsys: pytest.CaptureFixture) -> None:
    out = subprocess.run(
        [sys.executable, str(FOLDER / "run.py"), "--help"], capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "usage: run.py" in out.stdout and "smoke.py" in out.stdout
    for mode in ("evaluate", "train"):
        with pytest.raises(SystemExit) as exit_:
            run.main([mode, "--help"])
        assert exit_.value.code == 0
        assert f"usage: run.py {mode}" in capsys.readouterr().out
    assert run.main([]) == 2  # no mode: usage error


def test_default_sample_path_is_next_to_the_repo() -> None:
    if "KPDIFF_POSETRACK18_SAMPLE" not in os.environ:
        assert smoke.DEFAULT_SAMPLE == SAMPLE


@pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"PoseTrack18 sample not at {SAMPLE}")
def test_smoke_runs_on_the_real_sample(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = smoke.main(["--data", str(SAMPLE), "-n", "1", "--steps", "1", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "3 videos, 3 labelled frames, 14 persons" in out
    assert "14 from ground-truth boxes, 186 from detector boxes" in out
    assert "clip frames [0, 0, 0]" in out  # one listed frame: clamp repeats the key frame
    assert "same boxes per frame" in out  # DCPose-layout conversion of the COCO boxes
    assert all(c in out for c in COLUMNS)
    # SweepResult.table(): a row "N steps columns…" for ground-truth and for detector boxes
    assert len(re.findall(r"^ +1 +1 +[\d.n/a ]+$", out, re.M)) == 2
    assert out.count("identical") == 2  # prediction files re-read give the same AP
    assert "UNTRAINED" in out and "APs near 0 are expected" in out
    assert "smoke OK" in out
    for kind in ("gt", "det"):
        files = sorted((tmp_path / kind / "pred_n1_steps1").glob("*.json"))
        assert [f.stem for f in files] == ["003418_mpii_test", "009473_mpii_test",
                                           "012834_mpii_test"]  # fmt: skip


def test_smoke_without_the_sample_says_so_and_exits_0(tmp_path, capsys) -> None:
    assert smoke.main(["--data", str(tmp_path / "absent")]) == 0
    assert "not found" in capsys.readouterr().out


def test_evaluate_a_fresh_model_on_synthetic_videos(synthetic, tmp_path, capsys) -> None:
    root, model = synthetic
    out_dir = tmp_path / "out"
    args = ["evaluate", str(model), "--data", str(root), "-n", "1", "2", "--steps", "1"]
    assert run.main([*args, "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert all(c in out for c in COLUMNS)
    assert [r.split()[1:3] for r in _table_rows(out)] == [["N=1", "steps=1"], ["N=2", "steps=1"]]
    assert "DiffPose paper" not in out  # no paper row for the synthetic set
    results = json.loads((out_dir / "results.json").read_text())
    assert set(results["results"]) == {"n1_steps1", "n2_steps1"}
    assert len(list((out_dir / "pred_n1_steps1").glob("*.json"))) == 2

    boxes = root / "detections" / "val_boxes.json"  # DCPose layout
    assert run.main(["evaluate", str(model), "--data", str(root), "--boxes", str(boxes), "-n",
                     "1", "--steps", "1", "--paper", "posetrack17"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "clips from" in out and str(boxes) in out
    assert "DiffPose paper (PoseTrack17 val)" in out and "86.4" in out


def test_evaluate_refuses_boxes_that_match_no_frame(synthetic, tmp_path, capsys) -> None:
    root, model = synthetic
    bad = tmp_path / "boxes.json"
    bad.write_text(json.dumps([{"image_id": 1, "bbox": [0, 0, 50, 90], "score": 0.9}]))
    assert run.main(["evaluate", str(model), "--data", str(root), "--boxes", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "matches a labelled frame" in err and "image_id" in err


def test_train_dry_run_checks_a_real_layout_root(synthetic, tmp_path, capsys) -> None:
    root, _ = synthetic
    config = tmp_path / "exp.yaml"
    config.write_text(
        f"model: {{preset: diffpose-tiny}}\n"
        f"data: {{root: {root}, synthetic: false, val_boxes: {root}/detections/val_boxes.json}}\n"
        f"runtime: {{output_dir: {tmp_path / 'run'}, device: cpu}}\n"
    )
    args = ["train", "--config", str(config), "--dry-run", "--set", "optim.epochs=2 optim.lr=1e-3"]
    assert run.main(args) == 0
    out = capsys.readouterr().out
    assert re.search(r"checked: \d+ training clips, \d+ validation clips", out)
    assert "dry run: not training" in out
    assert not (tmp_path / "run").exists()
    assert run.main([*args, "--data", str(tmp_path / "absent")]) == 2
    assert "does not exist" in capsys.readouterr().err
    from kpdiff.engine.config import split_overrides  # what the script and `kpdiff train` use

    assert split_overrides(["model.overrides={delta: 0}", "a.b=1 c.d=2"]) == [
        "model.overrides={delta: 0}",
        "a.b=1",
        "c.d=2",
    ]


def test_prepare_check_and_convert_boxes(synthetic, tmp_path) -> None:
    root, _ = synthetic
    report = prepare.check_dataset(root, boxes=root / "detections" / "val_boxes.json")
    assert report.ok, report.text()
    assert "6 digits from 000000" in report.text()
    # COCO-detection records with corner boxes -> DCPose layout, same boxes on the same frames.
    videos = read_posetrack(root, split="val")
    frame = videos[0].frames[2]
    coco = [{"image_id": frame.image_id, "bbox": [10, 20, 60, 120], "score": 0.8,
             "category_id": 1}, {"image_id": 123, "bbox": [0, 0, 5, 5], "score": 0.9}]  # fmt: skip
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    n, unknown = prepare.convert_boxes(
        tmp_path / "coco.json", tmp_path / "dcpose.json", data=root, box_format="xyxy"
    )
    assert (n, unknown) == (1, 1)
    dets = read_detections(tmp_path / "dcpose.json")
    labelled = sum(f.is_labeled for v in videos for f in v.frames)
    assert prepare.box_coverage(videos, dets) == (labelled, 1, 1)
    assert dets[f"{videos[0].name}/{Path(frame.image_path).name}"].tolist() == [
        [10.0, 20.0, 50.0, 100.0, 0.8]
    ]
    # a record that would write a file read_detections refuses is refused here, by number
    for bad in ({"bbox": [10, 20, 60, 120], "score": True}, {"bbox": [60, 20, 10, 120]}):
        record = {"image_id": frame.image_id, "score": 0.8, **bad}
        (tmp_path / "bad.json").write_text(json.dumps([record]))
        with pytest.raises(KpdiffInputError, match=r"bad\.json: record 0"):
            prepare.convert_boxes(
                tmp_path / "bad.json", tmp_path / "out.json", data=root, box_format="xyxy"
            )
    assert not (tmp_path / "out.json").exists()


def test_prepare_check_names_missing_frames(synthetic, tmp_path) -> None:
    root, _ = synthetic
    video = read_posetrack(root, split="val")[0]
    copy = tmp_path / "copy"
    (copy / "annotations").mkdir(parents=True)
    (copy / "annotations" / "val").symlink_to(root / "annotations" / "val")
    folder = copy / Path(video.frames[0].image_path).parent
    folder.mkdir(parents=True)
    (folder / "00000001.jpg").write_bytes((root / video.frames[0].image_path).read_bytes())
    report = prepare.check_dataset(copy)
    assert not report.ok
    assert "8 digits from 00000001 (PoseTrack17)" in report.text()
    assert "another naming convention" in report.text()
