"""Training-log sinks: TensorBoard event files of a real (tiny) run, resumed without duplicate
steps; W&B through a stand-in ``wandb`` module; clear errors when a sink's package is missing."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from kpdiff.engine.config import ExperimentConfig, apply_overrides, check_config
from kpdiff.engine.sinks import WandbSink, check_sinks, open_sinks, record_scalars
from kpdiff.engine.train import train
from kpdiff.errors import KpdiffInputError


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` as TensorBoard reads the event files of ``folder``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def test_tensorboard_logs_a_run_and_its_resume_once_per_step(make_config, tiny_datasets):
    cfg = make_config()
    cfg.optim.max_steps = 6  # 2 epochs of 3 steps, validated after each
    cfg.eval.every = 1
    cfg = apply_overrides(cfg, ["runtime.tensorboard=true"])  # what `--set` does
    run = Path(cfg.runtime.output_dir)
    train(cfg, datasets=tiny_datasets, stop_after=4)  # killed one step after the checkpoint
    first = scalars(run / "tensorboard")
    assert [s for s, _ in first["train/loss"]] == [1, 2, 3, 4]
    train(cfg, datasets=tiny_datasets, resume=True)  # replays step 4 from step 3's checkpoint

    logged = scalars(run / "tensorboard")
    rows = records(run)  # metrics.jsonl stays, and is what TensorBoard shows
    steps = [r for r in rows if "loss" in r]
    vals = [r for r in rows if "val_mean_ap" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6] and [r["step"] for r in vals] == [3, 6]
    for tag, key in (("train/loss", "loss"), ("train/lr", "lr"),
                     ("train/samples_per_s", "samples_per_s")):  # fmt: skip
        assert [s for s, _ in logged[tag]] == [1, 2, 3, 4, 5, 6], tag  # step 4 once
        assert [v for _, v in logged[tag]] == pytest.approx([r[key] for r in steps], rel=1e-6)
    for column in ("Head", "Ankle", "Mean"):
        want = [(r["step"], r["val_columns"][column]) for r in vals]
        got = logged[f"val/ap_{column}"]
        assert [s for s, _ in got] == [s for s, _ in want]
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6, abs=1e-6)
    assert vals[-1]["val_grid"] == {"N1_steps1": vals[-1]["val_mean_ap"]}  # eval N × steps
    assert [s for s, _ in logged["val/ap_N1_steps1"]] == [3, 6]
    assert [s for s, _ in logged["val/best_ap"]] == [3, 6]


def test_record_scalars_names_and_skips_missing_values():
    train_record = {"step": 5, "epoch": 0, "loss": 0.5, "lr": 1e-3, "grad_norm": None,
                    "samples_per_s": 12.5, "time": 1.0}  # fmt: skip
    assert record_scalars(train_record) == {
        "train/loss": 0.5, "train/lr": 1e-3, "train/samples_per_s": 12.5,
    }  # fmt: skip
    val_record = {"step": 9, "val_mean_ap": 50.0, "best": 50.0, "eval_seconds": 2.0,
                  "val_columns": {"Head": 60.0, "Left wrist": None, "Mean": 50.0},
                  "val_grid": {"N10_steps4": 50.0, "N1_steps1": float("nan")}}  # fmt: skip
    assert record_scalars(val_record) == {
        "val/best_ap": 50.0, "val/eval_seconds": 2.0, "val/ap_Head": 60.0, "val/ap_Mean": 50.0,
        "val/ap_N10_steps4": 50.0,
    }  # fmt: skip


@pytest.fixture
def fake_wandb(monkeypatch):
    """A stand-in ``wandb`` module that records ``init``, ``log`` and ``finish``."""
    calls: list[tuple] = []

    class Run:
        def log(self, data, step=None):
            calls.append(("log", dict(data), step))

        def finish(self):
            calls.append(("finish",))

    def init(**kwargs):
        calls.append(("init", kwargs))
        return Run()

    module = types.ModuleType("wandb")
    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    return calls


def test_wandb_sink_logs_records_and_resumes_the_same_run(fake_wandb, tmp_path):
    cfg = ExperimentConfig()
    cfg.runtime.output_dir = str(tmp_path / "run")
    cfg.runtime.wandb, cfg.runtime.wandb_project = True, "poses"
    check_sinks(cfg)  # the stand-in counts as installed
    (sink,) = open_sinks(cfg)  # TensorBoard stays off
    assert isinstance(sink, WandbSink)
    sink.write({"step": 1, "loss": 0.25, "lr": 1e-3, "samples_per_s": 8.0})
    sink.write({"step": 3, "val_columns": {"Mean": 40.0}, "val_grid": {"N1_steps1": 40.0}})
    sink.write({"step": 3, "time": 2.0})  # nothing to log
    sink.close()
    (init, kwargs), *rest = fake_wandb
    assert init == "init" and kwargs["project"] == "poses" and kwargs["resume"] == "allow"
    assert kwargs["config"]["runtime"]["wandb"] is True
    assert Path(kwargs["dir"]) == tmp_path / "run"
    run_id = (tmp_path / "run" / "wandb_run_id").read_text().strip()
    assert kwargs["id"] == run_id
    assert rest == [
        ("log", {"train/loss": 0.25, "train/lr": 1e-3, "train/samples_per_s": 8.0}, 1),
        ("log", {"val/ap_Mean": 40.0, "val/ap_N1_steps1": 40.0}, 3),
        ("finish",),
    ]
    fake_wandb.clear()
    open_sinks(cfg, resume_step=3)[0].close()  # a resumed run continues the W&B run
    assert fake_wandb[0][1]["id"] == run_id
    fake_wandb.clear()
    open_sinks(cfg)[0].close()  # a fresh run in the same folder is a new W&B run
    assert fake_wandb[0][1]["id"] != run_id


def test_missing_sink_packages_are_one_line_errors_before_training(make_config, monkeypatch):
    cfg = make_config()
    cfg.runtime.wandb = True
    monkeypatch.setitem(sys.modules, "wandb", None)  # not installed
    with pytest.raises(KpdiffInputError, match=r"^runtime\.wandb: true needs the wandb package: "
                       r"pip install wandb$"):  # fmt: skip
        train(cfg)
    assert not Path(cfg.runtime.output_dir).exists()  # nothing started
    with pytest.raises(KpdiffInputError, match="pip install wandb"):
        WandbSink(cfg.runtime.output_dir)
    cfg.runtime.wandb, cfg.runtime.tensorboard = False, True
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(KpdiffInputError, match="pip install tensorboard"):
        check_sinks(cfg)


@pytest.mark.parametrize("project", ["", "  ", "team/poses", None])
def test_bad_wandb_project_is_refused(project):
    cfg = ExperimentConfig()
    cfg.runtime.wandb_project = project
    with pytest.raises(KpdiffInputError, match=r"runtime\.wandb_project: expected a W&B project"):
        check_config(cfg)
