"""``kpdiff train / evaluate-model / predict / demo`` run in-process through ``main``: success
paths, and bad input giving exit code 2 with ONE line on stderr and no traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from engine_helpers import tiny_experiment

from kpdiff.cli import main
from kpdiff.engine.checkpoint import latest_checkpoint
from kpdiff.engine.config import load_config, save_config


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, command: str, *words: str) -> None:
    assert code == 2, err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith(f"kpdiff {command}: error: ") or err.startswith("kpdiff: error:"), err
    assert "Traceback" not in err
    for word in words:
        assert word in err, (word, err)


@pytest.fixture
def tiny_yaml(tiny_data, tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    save_config(tiny_experiment(tiny_data, tmp_path / "run"), path)
    return path


@pytest.fixture(scope="module")
def mismatched_dir(tiny_model_dir, other_model_dir, tmp_path_factory) -> Path:
    """A save_pretrained folder whose config.json is not the weights' config."""
    folder = tmp_path_factory.mktemp("mismatched")
    shutil.copy(other_model_dir / "model.safetensors", folder)
    shutil.copy(tiny_model_dir / "config.json", folder)
    return folder


# ------------------------------------------------------------------------------------- train


def test_train_success_then_resume(capsys, tiny_yaml, tmp_path):
    code, out, err = run(capsys, "train", tiny_yaml, "--set", "optim.max_steps=2")
    assert code == 0, err
    assert out.startswith("best validation Mean AP") and str(tmp_path / "run" / "best") in out
    assert latest_checkpoint(tmp_path / "run").name == "step-0000002"
    code, out, err = run(capsys, "train", tiny_yaml, "--resume", "--set", "optim.max_steps=3")
    assert code == 0, err
    assert latest_checkpoint(tmp_path / "run").name == "step-0000003"


def test_train_overrides_with_spaces_and_several_per_flag(capsys, tiny_yaml, tmp_path):
    code, _, err = run(
        capsys, "train", tiny_yaml,
        "--set", "model.overrides={delta: 0, lookup: none}",
        "-s", "optim.max_steps=1 optim.lr=2e-3",
    )  # fmt: skip
    assert code == 0, err
    cfg = load_config(tmp_path / "run" / "experiment.yaml")
    assert cfg.model.overrides.changes() == {"delta": 0, "lookup": "none"}
    assert cfg.optim.max_steps == 1 and cfg.optim.lr == 2e-3
    saved = json.loads((latest_checkpoint(tmp_path / "run") / "config.json").read_text())
    assert saved["delta"] == 0 and saved["lookup"] == "none"


def test_train_missing_config(capsys, tmp_path):
    code, _, err = run(capsys, "train", tmp_path / "nope.yaml")
    assert_one_line_error(code, err, "train", "nope.yaml", "not found")


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        ({"optim": {"lrr": 1.0}}, ["lrr"]),
        ({"optim": {"lr": "fast"}}, ["optim.lr", "fast"]),
        ({"model": {"preset": "diffpose-xl"}}, ["model.preset", "diffpose-xl"]),
        ({"model": {"overrides": {"widht": 3}}}, ["model.overrides", "widht"]),
        ({"runtime": {"device": "gpu"}}, ["runtime.device", "gpu"]),
    ],
)
def test_train_bad_config_keys(capsys, tiny_yaml, edit, words):
    data = yaml.safe_load(tiny_yaml.read_text())
    for section, values in edit.items():
        data[section].update(values)
    tiny_yaml.write_text(yaml.safe_dump(data))
    code, _, err = run(capsys, "train", tiny_yaml)
    assert_one_line_error(code, err, "train", str(tiny_yaml), *words)


@pytest.mark.parametrize(
    ("override", "words"),
    [("optim.lrr=1", ["optim.lrr"]), ("optim.epochs=two", ["optim.epochs"]), ("lr=1", ["lr=1"])],
)
def test_train_bad_override(capsys, tiny_yaml, override, words):
    code, _, err = run(capsys, "train", tiny_yaml, "--set", override)
    assert_one_line_error(code, err, "train", *words)


def test_train_resume_without_checkpoint(capsys, tiny_yaml):
    code, _, err = run(capsys, "train", tiny_yaml, "--resume")
    assert_one_line_error(code, err, "train", "--resume", "no checkpoint")


def test_train_resume_a_checkpoint_of_another_config(capsys, tiny_yaml):
    assert run(capsys, "train", tiny_yaml, "--set", "optim.max_steps=1")[0] == 0
    code, _, err = run(capsys, "train", tiny_yaml, "--resume", "--set", "model.overrides={dim: 32}")
    assert_one_line_error(code, err, "train", "step-0000001", "another experiment", "dim")


def test_train_missing_dataset(capsys, tiny_yaml, tmp_path):
    code, _, err = run(
        capsys, "train", tiny_yaml, "--set", f"data.root={tmp_path / 'nodata'}",
        "--set", "data.synthetic=false",
    )  # fmt: skip
    assert_one_line_error(code, err, "train", "data.root", "nodata")


def test_train_unwritable_output(capsys, tiny_yaml, tmp_path):
    (tmp_path / "a_file").write_text("")
    code, _, err = run(
        capsys, "train", tiny_yaml, "--set", f"runtime.output_dir={tmp_path / 'a_file' / 'run'}"
    )
    assert_one_line_error(code, err, "train", "a_file")


# ---------------------------------------------------------------------------- evaluate-model


def test_evaluate_model_prints_a_table_per_point_and_writes_predictions(
    capsys, tiny_model_dir, tiny_data, tmp_path
):
    code, out, err = run(
        capsys, "evaluate-model", tiny_model_dir, "--data", tiny_data,
        "--num-samples", "1", "2", "--steps", "1", "2",
        "--max-clips", "6", "--batch-size", "6", "--out", tmp_path / "eval",
    )  # fmt: skip
    assert code == 0, err
    headers = [line for line in out.splitlines() if line.startswith("N = ")]
    assert headers == [f"N = {n}, steps = {s}" for n in (1, 2) for s in (1, 2)]
    assert out.count("Head  Shoulder") == 4 and "6 clips in" in out
    videos = sorted(p.name for p in (tiny_data / "annotations" / "val").glob("*.json"))
    for n in (1, 2):
        for s in (1, 2):
            folder = tmp_path / "eval" / f"pred_n{n}_steps{s}"
            assert sorted(p.name for p in folder.iterdir()) == videos
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert sorted(results["results"]) == ["n1_steps1", "n1_steps2", "n2_steps1", "n2_steps2"]
    assert results["boxes"] == "gt" and results["clips"] == 6 and results["edge"] == "clamp"
    # the written files are complete prediction files: `kpdiff evaluate` accepts them
    code, _, err = run(
        capsys, "evaluate", "--gt", tiny_data / "annotations" / "val",
        "--pred", tmp_path / "eval" / "pred_n1_steps1",
    )  # fmt: skip
    assert code == 0, err


def test_evaluate_model_and_the_benchmark_give_the_same_results(
    capsys, tiny_model_dir, tiny_data, tmp_path
):
    """One job behind two command lines: ``kpdiff evaluate-model`` and
    ``benchmarks/posetrack/run.py evaluate`` write byte-identical results.json, for detector
    boxes and a non-default edge and box threshold too."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "posetrack" / "run.py"
    spec = importlib.util.spec_from_file_location("kpdiff_posetrack_run_cli_test", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    boxes = tiny_data / "detections" / "val_boxes.json"
    common = [str(tiny_model_dir), "--data", str(tiny_data), "-n", "1", "2", "--steps", "1",
              "--max-clips", "8", "--batch-size", "4", "--boxes", str(boxes), "--edge", "repeat",
              "--min-box-score", "0.3", "--quiet"]  # fmt: skip
    code, _, err = run(capsys, "evaluate-model", *common, "--out", tmp_path / "cli")
    assert code == 0, err
    assert bench.main(["evaluate", *common, "--out", str(tmp_path / "bench")]) == 0
    capsys.readouterr()
    cli = (tmp_path / "cli" / "results.json").read_bytes()
    assert cli == (tmp_path / "bench" / "results.json").read_bytes()
    results = json.loads(cli)
    assert (results["edge"], results["min_box_score"]) == ("repeat", 0.3)
    assert results["boxes"] == str(boxes) and results["clips"] == 8
    for point in ("pred_n1_steps1", "pred_n2_steps1"):
        for f in sorted((tmp_path / "cli" / point).iterdir()):
            assert f.read_bytes() == (tmp_path / "bench" / point / f.name).read_bytes()


def test_evaluate_model_takes_the_data_settings_of_the_run(
    capsys, tiny_model_dir, tiny_data, tmp_path
):
    """A run folder without --data: the run's experiment.yaml gives root, boxes, edge, threshold
    and the grid (evaluate-model once ignored the run's edge and box threshold)."""
    from kpdiff.engine.config import ExperimentConfig, save_config

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run_dir / "best")
    config = ExperimentConfig()
    config.data.root = str(tiny_data)
    config.data.val_boxes = str(tiny_data / "detections" / "val_boxes.json")
    config.data.edge, config.data.min_box_score = "repeat", 0.35
    config.eval.num_samples, config.eval.steps = 2, 1
    save_config(config, run_dir / "experiment.yaml")
    code, _, err = run(capsys, "evaluate-model", run_dir, "--max-clips", "4", "--quiet",
                       "--out", tmp_path / "eval")  # fmt: skip
    assert code == 0, err
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["checkpoint"] == str(run_dir / "best") and results["data"] == str(tiny_data)
    assert (results["edge"], results["min_box_score"]) == ("repeat", 0.35)
    assert results["boxes"] == config.data.val_boxes and list(results["results"]) == ["n2_steps1"]
    code, _, err = run(capsys, "evaluate-model", run_dir, "--edge", "clamp", "--boxes", "gt",
                       "--max-clips", "4", "-q", "--out", tmp_path / "eval2")  # fmt: skip
    assert code == 0, err
    again = json.loads((tmp_path / "eval2" / "results.json").read_text())
    assert (again["edge"], again["boxes"]) == ("clamp", "gt")  # arguments override the run's
    # a box file relative to data.root (training reads it so) is found there too
    config.data.val_boxes = "detections/val_boxes.json"
    save_config(config, run_dir / "experiment.yaml")
    code, _, err = run(capsys, "evaluate-model", run_dir, "--max-clips", "4", "-q",
                       "--out", tmp_path / "eval3")  # fmt: skip
    assert code == 0, err
    third = json.loads((tmp_path / "eval3" / "results.json").read_text())
    assert third["boxes"] == "detections/val_boxes.json" and third["results"] == results["results"]


def test_evaluate_model_with_detector_boxes(capsys, tiny_model_dir, tiny_data):
    boxes = tiny_data / "detections" / "val_boxes.json"
    code, out, err = run(
        capsys, "evaluate-model", tiny_model_dir, "--data", tiny_data, "--boxes", boxes,
        "-n", "1", "--steps", "1", "--max-clips", "4",
    )  # fmt: skip
    assert code == 0, err
    assert out.startswith("N = 1, steps = 1")


@pytest.mark.parametrize(
    "case", ["no-checkpoint", "mismatched", "no-data", "no-boxes", "bad-boxes", "schema"]
)
def test_evaluate_model_bad_input(
    capsys, case, tiny_model_dir, mismatched_dir, tiny_data, tmp_path
):
    checkpoint, data, extra, words = tiny_model_dir, tiny_data, [], []
    if case == "no-checkpoint":
        checkpoint, words = tmp_path / "nockpt", ["nockpt"]
    elif case == "mismatched":
        checkpoint, words = mismatched_dir, ["does not match", "config.json"]
    elif case == "no-data":
        data, words = tmp_path / "nodata", ["nodata"]
    elif case == "no-boxes":
        extra, words = ["--boxes", tmp_path / "nope.json"], ["--boxes", "nope.json"]
    elif case == "bad-boxes":
        (tmp_path / "bad.json").write_text('{"not": "a list"')
        extra, words = ["--boxes", tmp_path / "bad.json"], ["bad.json"]
    else:
        extra, words = ["--schema", "quadruped"], ["--schema", "13"]
    code, _, err = run(capsys, "evaluate-model", checkpoint, "--data", data, *extra)
    assert_one_line_error(code, err, "evaluate-model", *words)


# ----------------------------------------------------------------------------------- predict


@pytest.mark.parametrize("render", ["gif", "mp4", "none"])
def test_predict_writes_the_files_it_lists(capsys, tiny_model_dir, tiny_data, tmp_path, render):
    video = tiny_data / "images" / "val" / "020000_synthetic"
    code, out, err = run(
        capsys, "predict", video, "--boxes", tiny_data / "detections" / "val_boxes.json",
        "--checkpoint", tiny_model_dir, "--out", tmp_path / "pred", "-n", "1", "--steps", "1",
        "--render", render,
    )  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].endswith(f"poses on {len(list(video.glob('*.jpg')))} frames:")
    listed = [Path(line.strip()) for line in lines[1:]]
    names = ["020000_synthetic_posetrack18.json", "020000_synthetic_coco.json",
             "020000_synthetic_predictions.json"]  # fmt: skip
    if render != "none":
        names.append(f"020000_synthetic_overlay.{render}")
    assert [p.name for p in listed] == names
    assert all(p.is_file() and p.stat().st_size > 0 for p in listed)
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == sorted(names)


@pytest.mark.parametrize(
    "case",
    ["no-video", "no-boxes", "bad-boxes", "foreign-boxes", "no-checkpoint", "mismatched",
     "text-video", "low-boxes", "out-is-a-file", "bad-min-score"],
)  # fmt: skip
def test_predict_bad_input(capsys, case, tiny_model_dir, mismatched_dir, tiny_data, tmp_path):
    video = tiny_data / "images" / "val" / "020000_synthetic"
    boxes = tiny_data / "detections" / "val_boxes.json"
    checkpoint, words, extra = tiny_model_dir, [], []
    if case == "no-video":
        video, words = tmp_path / "novideo", ["novideo"]
    elif case == "no-boxes":
        boxes, words = tmp_path / "nope.json", ["nope.json"]
    elif case == "bad-boxes":
        boxes = tmp_path / "bad.json"
        boxes.write_text(json.dumps([{"image_id": 0, "bbox": [0, 0, -5, 3], "score": 1.0}]))
        words = ["bad.json", "bbox"]
    elif case == "foreign-boxes":
        boxes = tmp_path / "foreign.json"
        boxes.write_text(json.dumps([{"image_name": "x/000000.jpg", "bbox": [0, 0, 5, 3],
                                      "score": 1.0}]))  # fmt: skip
        words = ["foreign.json", "none of its boxes"]
    elif case == "no-checkpoint":
        checkpoint, words = tmp_path / "nockpt", ["nockpt"]
    elif case == "text-video":
        video, words = tmp_path / "notes.txt", ["notes.txt", "neither a folder"]
        video.write_text("not a video\n" * 20)
    elif case == "low-boxes":
        boxes = tmp_path / "low.json"
        boxes.write_text(json.dumps([{"image_id": 0, "bbox": [0, 0, 5, 3], "score": 0.1}]))
        words = ["low.json", "min_box_score", "--min-box-score"]
    elif case == "out-is-a-file":
        (tmp_path / "out").write_text("")
        words = ["--out", "not a folder"]
    elif case == "bad-min-score":
        extra, words = ["--min-box-score", "nan"], ["min_box_score", "finite"]
    else:
        checkpoint, words = mismatched_dir, ["does not match"]
    code, _, err = run(
        capsys, "predict", video, "--boxes", boxes, "--checkpoint", checkpoint,
        "--out", tmp_path / "out", "-n", "1", "--steps", "1", *extra,
    )  # fmt: skip
    assert_one_line_error(code, err, "predict", *words)


# -------------------------------------------------------------------------------------- demo


def test_demo_unwritable_output(capsys, tmp_path):
    (tmp_path / "a_file").write_text("")
    code, _, err = run(capsys, "demo", "--quick", "--out", tmp_path / "a_file" / "demo")
    assert_one_line_error(code, err, "demo", "a_file")


def test_predict_warning_is_one_line(capsys, tiny_model_dir, tiny_data, tmp_path):
    video = tiny_data / "images" / "val" / "020000_synthetic"
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"image_id": i, "bbox": [5, 5, 30, 40], "score": 0.9}
                                 for i in (0, 50)]))  # fmt: skip
    code, _, err = run(
        capsys, "predict", video, "--boxes", boxes, "--checkpoint", tiny_model_dir,
        "--out", tmp_path / "out", "-n", "1", "--steps", "1", "--render", "none",
    )  # fmt: skip
    assert code == 0
    assert err.startswith("kpdiff predict: warning: ") and err.count("\n") == 1, err
    assert "name no frame" in err


def test_evaluate_model_out_is_a_file(capsys, tiny_model_dir, tiny_data, tmp_path):
    (tmp_path / "out").write_text("")
    code, _, err = run(
        capsys, "evaluate-model", tiny_model_dir, "--data", tiny_data, "--out", tmp_path / "out"
    )
    assert_one_line_error(code, err, "evaluate-model", "--out", "not a folder")


def test_usage_errors_are_one_line(capsys):
    code, _, err = run(capsys, "train")
    assert_one_line_error(code, err, "train")
    code, _, err = run(capsys, "predict", "video")
    assert_one_line_error(code, err, "predict", "--checkpoint")


def test_demo_quick_end_to_end(capsys, tmp_path):
    code, out, err = run(capsys, "demo", "--quick", "--out", tmp_path / "demo")
    assert code == 0, err
    demo = tmp_path / "demo"
    names = ["ap_table.txt", "ap_vs_n_steps.png", "overlay.gif", "overlay_frames.png"]
    names += ["summary.json"]
    names += [f"inside/{n}.png" for n in ("lookup_masks", "x0_steps", "hypotheses")]
    for name in names:
        assert (demo / name).is_file() and (demo / name).stat().st_size > 0, name
    table = (demo / "ap_table.txt").read_text().splitlines()
    assert table[0].split()[:2] == ["N", "steps"] and len(table) == 1 + 9
    summary = json.loads((demo / "summary.json").read_text())
    assert len(summary["grid"]) == 9 and summary["clips_evaluated"] > 0
    # train and val AP side by side, at the validation point
    assert summary["point"] == [10, 4] and 0 <= summary["train_mean_ap"] <= 100
    assert f"val {summary['val_mean_ap']:.1f}, gap" in out
    assert "done in" in out
