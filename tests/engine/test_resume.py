"""Exact resume: a run stopped anywhere (as a kill would) and resumed gives the uninterrupted
run's losses step for step and its final weights, bit for bit (CPU; also with a worker process
and with fp16 loss scaling); resuming what cannot be resumed is a one-line error."""

from __future__ import annotations

import copy
import importlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from engine_helpers import tiny_experiment

from kpdiff.diffpose import DiffPose
from kpdiff.engine.checkpoint import latest_checkpoint, load_training_state
from kpdiff.engine.train import train
from kpdiff.errors import KpdiffInputError


def weights(run: str | Path) -> dict[str, torch.Tensor]:
    return DiffPose.from_pretrained(latest_checkpoint(run)).state_dict()


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def logged_losses(run: str | Path) -> dict[int, float]:
    lines = (Path(run) / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == sorted(set(steps)), "a step is logged twice"
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.fixture(scope="module")
def uninterrupted(tiny_data, tmp_path_factory):
    """3 epochs x 3 steps with a validation each epoch and a milestone after epoch 2."""
    cfg = tiny_experiment(tiny_data, tmp_path_factory.mktemp("full") / "run")
    cfg.eval.every = 1
    return cfg, train(cfg)


@pytest.mark.parametrize(
    "stops",
    [
        [4],  # one step after the first checkpoint (step 3), mid-epoch
        [5],  # between two checkpoints
        [6],  # exactly at a checkpoint (the epoch's last step, before its checkpoint)
        [2, 4, 8],  # stopped three times, once before any checkpoint exists
    ],
    ids=["after-ckpt", "between", "at-epoch-end", "three-kills"],
)
def test_resumed_run_equals_uninterrupted_run(uninterrupted, tiny_data, tmp_path, stops):
    full_cfg, full = uninterrupted
    cfg = tiny_experiment(tiny_data, tmp_path / "run")
    cfg.eval.every = 1
    losses: dict[int, float] = {}
    resume = False
    for stop in stops:
        part = train(cfg, resume=resume, stop_after=stop)
        assert max(part.losses) == stop
        losses.update(part.losses)
        resume = latest_checkpoint(cfg.runtime.output_dir) is not None
    rest = train(cfg, resume=True)
    losses.update(rest.losses)
    assert rest.steps == full.steps == 9
    # exact float equality, step for step (the replayed steps included)
    assert losses == full.losses
    assert logged_losses(cfg.runtime.output_dir) == full.losses
    assert rest.best_ap == full.best_ap
    assert_same_weights(weights(cfg.runtime.output_dir), weights(full_cfg.runtime.output_dir))


def test_resume_is_exact_with_worker_processes(tiny_data, tmp_path):
    cfg = tiny_experiment(tiny_data, tmp_path / "full")
    cfg.data.workers = 1  # augmentation is drawn in the worker process
    full = train(cfg)
    cfg.runtime.output_dir = str(tmp_path / "stopped")
    losses = train(cfg, stop_after=5).losses
    losses.update(train(cfg, resume=True).losses)
    assert losses == full.losses
    assert_same_weights(weights(tmp_path / "stopped"), weights(tmp_path / "full"))


def test_fp16_loss_scaling_is_checkpointed_and_resumed(tiny_data, tmp_path, monkeypatch):
    # fp16 autocast is used on GPUs only; CPU autocast runs the same code path here.
    module = importlib.import_module("kpdiff.engine.train")
    monkeypatch.setattr(module, "amp_dtype", lambda amp, device: torch.float16)
    cfg = tiny_experiment(tiny_data, tmp_path / "run")
    cfg.optim.max_steps = 4
    first = train(cfg, stop_after=4).losses
    state = load_training_state(latest_checkpoint(tmp_path / "run"))
    assert state["scaler"]["scale"] > 1 and state["scaler"]["_growth_tracker"] == 3
    again = train(cfg, resume=True).losses
    assert again == {4: first[4]}


def test_resume_of_a_finished_run_does_nothing(uninterrupted, tmp_path):
    full_cfg, _ = uninterrupted
    run = tmp_path / "run"
    shutil.copytree(full_cfg.runtime.output_dir, run)
    cfg = copy.deepcopy(full_cfg)
    cfg.runtime.output_dir = str(run)
    again = train(cfg, resume=True)
    assert again.steps == 9 and again.losses == {}
    assert_same_weights(weights(run), weights(full_cfg.runtime.output_dir))


def test_resume_without_checkpoint_is_a_clear_error(make_config):
    cfg = make_config()
    with pytest.raises(KpdiffInputError, match="no checkpoint"):
        train(cfg, resume=True)


def test_resume_with_a_broken_latest_pointer_is_a_clear_error(make_config, tiny_datasets):
    cfg = make_config()
    cfg.optim.max_steps = 1
    train(cfg, datasets=tiny_datasets)
    pointer = Path(cfg.runtime.output_dir) / "checkpoints" / "latest"
    pointer.write_text("step-0000999\n")
    with pytest.raises(KpdiffInputError, match="not a complete checkpoint"):
        train(cfg, resume=True, datasets=tiny_datasets)


def test_resume_of_another_configs_checkpoint_is_a_one_line_error(make_config, tiny_datasets):
    cfg = make_config()
    cfg.optim.max_steps = 1
    train(cfg, datasets=tiny_datasets)
    other = make_config()
    other.model.overrides = {"dim": 32, "decoder_dims": [32, 16, 8]}  # other widths
    with pytest.raises(KpdiffInputError) as err:
        train(other, resume=True, datasets=tiny_datasets)
    message = str(err.value)
    assert "\n" not in message and "another" in message
    assert str(latest_checkpoint(cfg.runtime.output_dir)) in message


def _recipe(cfg):
    """The demo's recipe: warm-up, cosine decay, a weight average, t-bias and self-alignment."""
    cfg.optim.schedule, cfg.optim.warmup_steps, cfg.optim.ema_decay = "cosine", 2, 0.9
    cfg.model.overrides = {"t_power": 2.0, "self_align": 0.5}
    cfg.eval.every = 1
    return cfg


def test_resume_is_exact_with_cosine_schedule_and_weight_average(tiny_data, tmp_path):
    full_cfg = _recipe(tiny_experiment(tiny_data, tmp_path / "full"))
    full = train(full_cfg)
    cfg = _recipe(tiny_experiment(tiny_data, tmp_path / "run"))
    part = train(cfg, stop_after=5)
    rest = train(cfg, resume=True)
    assert {**part.losses, **rest.losses} == full.losses
    assert rest.best_ap == full.best_ap
    assert_same_weights(weights(cfg.runtime.output_dir), weights(full_cfg.runtime.output_dir))
    state = load_training_state(latest_checkpoint(cfg.runtime.output_dir))
    full_state = load_training_state(latest_checkpoint(full_cfg.runtime.output_dir))
    assert_same_weights(state["ema"], full_state["ema"])
    # best/ holds the average, which differs from the raw weights it tracks
    best = DiffPose.from_pretrained(Path(cfg.runtime.output_dir) / "best").state_dict()
    raw = weights(cfg.runtime.output_dir)
    assert any(not torch.equal(best[k], raw[k]) for k in raw)


def test_resume_without_the_weight_average_is_one_line_error(tiny_data, tmp_path):
    cfg = tiny_experiment(tiny_data, tmp_path / "run")
    train(cfg, stop_after=4)
    cfg.optim.ema_decay = 0.9
    with pytest.raises(KpdiffInputError, match="weight average"):
        train(cfg, resume=True)
