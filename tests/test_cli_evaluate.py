"""``kpdiff evaluate``: success and bad-input paths, run in-process through ``main``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from kpdiff.cli import main
from kpdiff.data.posetrack import write_posetrack18, write_posetrack18_predictions
from kpdiff.data.structures import FrameAnnotation, PersonAnnotation, VideoAnnotation

SAMPLE = Path(
    os.environ.get(
        "KPDIFF_POSETRACK18_SAMPLE",
        Path(__file__).resolve().parents[2] / "shared" / "data" / "posetrack18_sample",
    )
)


def make_dirs(tmp_path: Path, n_videos: int = 2, shift: float = 0.0) -> tuple[Path, Path]:
    """GT and prediction folders; predictions are the GT moved by ``shift`` pixels."""
    rng = np.random.default_rng(0)
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    for v in range(n_videos):
        name = f"{v:06d}_synth"
        gt, pred = VideoAnnotation(name), VideoAnnotation(name)
        for f in range(3):
            kp = np.column_stack([rng.uniform(100, 400, (17, 2)), np.ones(17)])
            kp[3:5] = 0
            head = np.array([100.0, 100, 130, 140])
            gt.frames.append(
                FrameAnnotation(
                    f"v{v}/{f:06d}.jpg",
                    f,
                    10 * v + f,
                    True,
                    [PersonAnnotation(kp, head_box=head, track_id=0)],
                )
            )
            p = kp.copy()
            p[5:, 0] += shift
            p[5:, 2] = rng.random(12)
            pred.frames.append(FrameAnnotation(f"v{v}/{f:06d}.jpg", f, 10 * v + f, True,
                                               [PersonAnnotation(p, track_id=0)]))  # fmt: skip
        write_posetrack18(gt, gt_dir / f"{name}.json")
        write_posetrack18_predictions(pred, pred_dir / f"{name}.json")
    return gt_dir, pred_dir


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["evaluate", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_evaluate_prints_table_and_writes_json(tmp_path, capsys):
    gt_dir, pred_dir = make_dirs(tmp_path)
    out_json = tmp_path / "res" / "ap.json"
    code, out, err = run(capsys, "--gt", gt_dir, "--pred", pred_dir, "--json", out_json)
    assert code == 0 and err == ""
    header, row = out.splitlines()[:2]
    assert header.split() == ["Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean"]
    assert row.split() == ["100.0"] * 8
    data = json.loads(out_json.read_text())
    assert set(data) == {"joints", "columns"} and len(data["joints"]) == 15
    assert data["columns"]["Mean"] == 100.0 and data["joints"]["head_top"] == 100.0
    assert [p.name for p in out_json.parent.iterdir()] == ["ap.json"]


def test_evaluate_wrong_predictions_score_low(tmp_path, capsys):
    gt_dir, pred_dir = make_dirs(tmp_path, shift=100.0)  # every body joint 100 px off
    code, out, _ = run(capsys, "--gt", gt_dir, "--pred", pred_dir)
    assert code == 0
    assert out.splitlines()[1].split() == ["100.0"] + ["0.0"] * 6 + [f"{300 / 15:.1f}"]


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="PoseTrack18 sample not available")
def test_evaluate_real_sample_pt18_against_pt17(capsys):
    code, out, _ = run(
        capsys,
        "--gt",
        SAMPLE / "annotations" / "val",
        "--pred",
        SAMPLE / "annotations_pt17" / "val",
    )
    assert code == 0 and out.splitlines()[1].split() == ["100.0"] * 8


def bad(capsys, *argv) -> str:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    return err


def test_evaluate_bad_inputs(tmp_path, capsys):
    gt_dir, pred_dir = make_dirs(tmp_path)
    assert "tmp_path_missing: no such file or folder" in bad(
        capsys, "--gt", tmp_path / "tmp_path_missing", "--pred", pred_dir
    )
    (pred_dir / "000001_synth.json").unlink()
    assert "video '000001_synth': no prediction video" in bad(
        capsys, "--gt", gt_dir, "--pred", pred_dir
    )
    (pred_dir / "000001_synth.json").write_text("{oops")
    err = bad(capsys, "--gt", gt_dir, "--pred", pred_dir)
    assert "000001_synth.json: not valid JSON" in err
    data = json.loads((gt_dir / "000001_synth.json").read_text())
    data["images"] = data["images"][:2]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 12]
    (pred_dir / "000001_synth.json").write_text(json.dumps(data))
    err = bad(capsys, "--gt", gt_dir, "--pred", pred_dir)
    assert "video '000001_synth': prediction has 2 frames, ground truth 3" in err
    assert "the following arguments are required: --pred" in bad(capsys, "--gt", gt_dir)


def test_evaluate_unwritable_json_and_usage(tmp_path, capsys):
    gt_dir, pred_dir = make_dirs(tmp_path, n_videos=1)
    (tmp_path / "dir.json").mkdir()
    bad(capsys, "--gt", gt_dir, "--pred", pred_dir, "--json", tmp_path / "dir.json")
    (tmp_path / "file").write_text("")
    err = bad(capsys, "--gt", gt_dir, "--pred", pred_dir, "--json", tmp_path / "file" / "x.json")
    assert "--json" in err and "not a folder" in err
    assert main([]) == 2
    assert main(["--help"]) == 0
    assert main(["nope"]) == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err
