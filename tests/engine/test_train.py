"""Training on the CPU: the files a run writes, its metrics, its checkpoints and ``best/``."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from engine_helpers import files_under
from safetensors.torch import load_file

from kpdiff.diffpose import DiffPose
from kpdiff.engine.checkpoint import latest_checkpoint, load_training_state
from kpdiff.engine.config import load_config
from kpdiff.engine.train import train
from kpdiff.engine.train_steps import EpochSampler
from kpdiff.errors import KpdiffInputError


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_step_run_writes_metrics_checkpoint_and_best(make_config, tiny_datasets):
    cfg = make_config()
    cfg.optim.max_steps = 2
    result = train(cfg, datasets=tiny_datasets)
    run = Path(cfg.runtime.output_dir)
    assert result.steps == 2 and sorted(result.losses) == [1, 2]
    assert all(torch.isfinite(torch.tensor(v)) for v in result.losses.values())

    steps = [r for r in records(run) if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:
        assert r["loss"] == result.losses[r["step"]]
        assert r["lr"] == cfg.optim.lr and r["samples_per_s"] > 0 and r["grad_norm"] >= 0
    (val,) = [r for r in records(run) if "val_mean_ap" in r]
    assert val["step"] == 2 and val["best"] == result.best_ap
    assert set(val["val_columns"]) >= {"Head", "Ankle", "Mean"}

    ckpt = latest_checkpoint(run)
    assert ckpt == run / "checkpoints" / "step-0000002"
    assert (run / "checkpoints" / "latest").read_text().strip() == ckpt.name
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "config.json", "experiment.yaml", "model.safetensors", "training_state.json",
        "training_state.safetensors",
    ]  # fmt: skip
    assert load_config(ckpt / "experiment.yaml") == cfg
    assert load_config(run / "experiment.yaml") == cfg
    assert DiffPose.from_pretrained(ckpt).config.schema == "posetrack"  # recorded for predict
    state = load_training_state(ckpt)
    assert state["counters"]["step"] == 2 and state["counters"]["best"] == result.best_ap
    assert set(state) >= {"optimizer", "scheduler", "counters", "rng"}

    best = DiffPose.from_pretrained(run / "best")
    last = DiffPose.from_pretrained(ckpt)
    for (k, a), b in zip(best.state_dict().items(), last.state_dict().values(), strict=True):
        assert torch.equal(a, b), k  # one validation: the best model is the last one
    # nothing half-written is left behind
    assert not [f for f in files_under(run) if Path(f).name.startswith(".")]


def test_files_are_readable_by_others_as_the_umask_says(make_config, tiny_datasets):
    import os

    cfg = make_config()
    cfg.optim.max_steps = 1
    old = os.umask(0o022)
    try:
        train(cfg, datasets=tiny_datasets)
    finally:
        os.umask(old)
    run = Path(cfg.runtime.output_dir)
    for path in [run / "experiment.yaml", run / "checkpoints" / "latest", latest_checkpoint(run)]:
        assert path.stat().st_mode & 0o044 == 0o044, path


def test_epochs_schedule_checkpoints_and_retention(make_config, tiny_datasets):
    cfg = make_config()  # 3 epochs x 3 steps, lr x0.1 after epoch 2
    cfg.eval.every = 1
    result = train(cfg, datasets=tiny_datasets)
    run = Path(cfg.runtime.output_dir)
    assert result.steps == 9
    lrs = {r["step"]: r["lr"] for r in records(run) if "loss" in r}
    assert lrs == {s: pytest.approx(1e-3 if s <= 6 else 1e-4) for s in range(1, 10)}
    assert [r["epoch"] for r in records(run) if "val_mean_ap" in r] == [1, 2, 3]
    # two checkpoints kept, the newest is latest
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == [
        "step-0000006", "step-0000009",
    ]  # fmt: skip
    assert latest_checkpoint(run).name == "step-0000009"
    assert load_training_state(latest_checkpoint(run))["counters"] == {
        "step": 9, "epoch": 3, "batch_in_epoch": 0, "best": result.best_ap,
    }  # fmt: skip
    assert (run / "best" / "model.safetensors").is_file()


def test_a_checkpoint_half_written_by_a_killed_run_is_cleaned_up(make_config, tiny_datasets):
    cfg = make_config()
    cfg.optim.max_steps = 1
    dead = Path(cfg.runtime.output_dir) / "checkpoints" / ".tmp-killed"
    dead.mkdir(parents=True)
    (dead / "model.safetensors").write_bytes(b"half")
    train(cfg, datasets=tiny_datasets)
    assert not dead.exists()
    assert sorted(p.name for p in dead.parent.iterdir()) == ["latest", "step-0000001"]


def test_a_new_run_in_the_same_folder_starts_a_new_metrics_log(make_config, tiny_datasets):
    cfg = make_config()
    cfg.optim.max_steps = 2
    train(cfg, datasets=tiny_datasets)
    train(cfg, datasets=tiny_datasets)
    steps = [r["step"] for r in records(Path(cfg.runtime.output_dir)) if "loss" in r]
    assert steps == [1, 2]


def test_same_seed_same_losses_other_seed_other_losses(make_config, tiny_datasets):
    cfg = make_config("a")
    cfg.optim.max_steps = 2
    a = train(cfg, datasets=tiny_datasets).losses
    cfg.runtime.output_dir = make_config("b").runtime.output_dir
    assert train(cfg, datasets=tiny_datasets).losses == a
    cfg.runtime.output_dir = make_config("c").runtime.output_dir
    cfg.runtime.seed = 1
    assert train(cfg, datasets=tiny_datasets).losses != a


def test_validation_does_not_change_the_training_draws(make_config, tiny_datasets):
    cfg = make_config("a")  # validates once, at the end
    quiet = train(cfg, datasets=tiny_datasets).losses
    cfg = make_config("b")
    cfg.eval.every = 1  # validates after every epoch
    assert train(cfg, datasets=tiny_datasets).losses == quiet


def test_compiled_decoder_writes_checkpoints_an_uncompiled_model_loads(
    make_config, tiny_datasets, monkeypatch
):
    import functools

    # the eager backend: dynamo traces, nothing is code-generated (seconds, not minutes)
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    cfg = make_config()
    cfg.model.compile_decoder = True
    cfg.optim.max_steps = 1
    cfg.eval.max_clips = 2
    train(cfg, datasets=tiny_datasets)
    run = Path(cfg.runtime.output_dir)
    for folder in (run / "best", latest_checkpoint(run)):
        model = DiffPose.from_pretrained(folder)  # no "_orig_mod." names in the weights
        assert not any("_orig_mod" in k for k in model.state_dict())
    train(cfg, resume=True, datasets=tiny_datasets)  # and the run resumes


def test_gpu_device_without_gpu_is_a_clear_error(make_config, tiny_datasets):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    cfg = make_config()
    cfg.runtime.device = "cuda"
    with pytest.raises(KpdiffInputError, match=r"runtime\.device.*CUDA is not available"):
        train(cfg, datasets=tiny_datasets)


def test_batch_larger_than_the_data_is_a_clear_error(make_config, tiny_datasets):
    cfg = make_config()
    cfg.optim.batch_size = 1000
    with pytest.raises(KpdiffInputError, match=r"optim\.batch_size"):
        train(cfg, datasets=tiny_datasets)


def test_train_builds_the_synthetic_data_when_missing(make_config, tmp_path):
    cfg = make_config()
    cfg.data.root = str(tmp_path / "fresh-data")
    cfg.optim.max_steps = 1
    cfg.eval.max_clips = 2
    train(cfg)
    assert (tmp_path / "fresh-data" / "synthetic.json").is_file()
    assert latest_checkpoint(cfg.runtime.output_dir) is not None


def test_missing_real_dataset_is_a_clear_error(make_config, tmp_path):
    cfg = make_config()
    cfg.data.root = str(tmp_path / "nowhere")
    cfg.data.synthetic = None
    with pytest.raises(KpdiffInputError, match=r"data\.root"):
        train(cfg)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_epoch_sampler_shards_cover_the_permutation(world):
    shards = [EpochSampler(10, seed=0, epoch=4, rank=r, world=world) for r in range(world)]
    assert len({len(s) for s in shards}) == 1  # every rank runs the same number of steps
    seen = [i for s in shards for i in s]
    assert set(seen) == set(range(10)) and len(seen) == -(-10 // world) * world
    again = EpochSampler(10, seed=0, epoch=4, rank=0, world=world)
    assert list(again) == list(shards[0])
    assert list(EpochSampler(10, seed=0, epoch=5)) != list(EpochSampler(10, seed=0, epoch=4))
    assert (
        list(EpochSampler(10, seed=0, epoch=4, skip=3))
        == list(EpochSampler(10, seed=0, epoch=4))[3:]
    )


def test_training_targets_use_the_model_sigma(make_config):
    """DiffPoseConfig.sigma is the σ of the targets the engine trains on."""
    from kpdiff.codecs import GaussianHeatmapCodec
    from kpdiff.engine.data import prepare_datasets

    config = make_config()
    config.model.overrides = dataclasses.replace(config.model.overrides, sigma=3.0)
    datasets = prepare_datasets(config)
    item = datasets.val[0]  # no augmentation: the targets of the crop's keypoints
    size = tuple(item["heatmaps"].shape[-2:])
    for sigma, same in ((3.0, True), (2.0, False)):
        want, _ = GaussianHeatmapCodec(size, stride=4, sigma=sigma).encode(
            item["keypoints"][None, :, :2], item["weights"][None]
        )
        assert torch.equal(item["heatmaps"], want[0]) is same


class KeyFrameModel(torch.nn.Module):
    """Not a DiffPose: the key frame through one strided conv, and a one-conv denoiser."""

    def __init__(self, num_keypoints: int = 17) -> None:
        from kpdiff import EnsembleSampler, GaussianHeatmapCodec, HeatmapDiffusion

        super().__init__()
        self.k = num_keypoints
        self.features = torch.nn.Conv2d(3, 8, 4, stride=4)  # 128×96 crops → 32×24
        self.net = torch.nn.Conv2d(8 + num_keypoints, num_keypoints, 3, padding=1)
        self.diffusion = HeatmapDiffusion()
        self.sampler = EnsembleSampler(self.diffusion, GaussianHeatmapCodec((32, 24)))

    def condition(self, clips):
        return self.features(clips[:, clips.shape[1] // 2])

    def forward(self, x_t, t, cond):
        return self.net(torch.cat([x_t, cond], dim=1))

    def loss(self, clips, heatmaps, weights):
        return self.diffusion.loss(self, heatmaps, self.condition(clips), weights)

    def predict(self, *, cond, num_samples, steps, generator):
        shape = (cond.shape[0], self.k, 32, 24)
        return self.sampler(
            self, cond, shape, num_samples=num_samples, steps=steps, generator=generator
        )


def test_a_model_of_your_own_trains_validates_checkpoints_and_resumes(make_config):
    from kpdiff.engine import TrainablePoseModel

    assert isinstance(KeyFrameModel(), TrainablePoseModel)
    cfg = make_config("full")
    cfg.eval.every = 1
    torch.manual_seed(0)
    full = train(cfg, model=KeyFrameModel())
    out = Path(cfg.runtime.output_dir)
    assert full.best_ap is not None and full.steps == 9
    best = KeyFrameModel()
    best.load_state_dict(load_file(str(out / "best" / "model.safetensors")))  # strict
    assert (latest_checkpoint(out) / "model.safetensors").is_file()

    cfg2 = make_config("stopped")
    cfg2.eval.every = 1
    torch.manual_seed(0)
    train(cfg2, model=KeyFrameModel(), stop_after=5)
    resumed = train(cfg2, model=KeyFrameModel(), resume=True)  # weights come from step 3
    assert resumed.losses == {s: v for s, v in full.losses.items() if s > 3}
    a = load_file(str(latest_checkpoint(out) / "model.safetensors"))
    b = load_file(str(latest_checkpoint(cfg2.runtime.output_dir) / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_model_without_loss_is_refused(make_config):
    class NoLoss(torch.nn.Module):
        def condition(self, clips):
            return clips

        def predict(self, *, cond, num_samples, steps, generator):
            return None

    with pytest.raises(KpdiffInputError, match=r"model: expected an nn\.Module with condition"):
        train(make_config(), model=NoLoss())


def test_a_model_passed_in_keeps_its_weights_and_identical_models_run_identically(
    make_config, tiny_datasets
):
    """runtime.seed does not re-initialise a model passed in (it may be pretrained): it seeds data
    order, augmentation and the diffusion draws. The model is trained in place, so two runs from
    models in the same state are identical, and experiment.yaml names the model that ran."""
    torch.manual_seed(123)  # not runtime.seed: the weights are the model's own
    model = KeyFrameModel()
    twin = copy.deepcopy(model)
    cfg = make_config("a")
    cfg.optim.max_steps = 3
    a = train(cfg, model=model, datasets=tiny_datasets)
    cfg.runtime.output_dir = make_config("b").runtime.output_dir
    b = train(cfg, model=twin, datasets=tiny_datasets)
    assert a.losses == b.losses and len(a.losses) == 3
    last = load_file(str(latest_checkpoint(cfg.runtime.output_dir) / "model.safetensors"))
    for k, v in model.state_dict().items():  # trained in place: both hold the final weights
        assert torch.equal(v, twin.state_dict()[k]) and torch.equal(v, last[k]), k

    for folder in (Path(cfg.runtime.output_dir), latest_checkpoint(cfg.runtime.output_dir)):
        ran = load_config(folder / "experiment.yaml")
        assert ran.model.custom["class"].endswith(".KeyFrameModel")
        assert ran.model.custom["config"] is None  # no config of its own
        assert ran.model.custom["parameters"] == sum(p.numel() for p in model.parameters())
        assert ran.data.custom is None  # the datasets are the ones the config describes
        assert dataclasses.replace(ran, model=cfg.model, data=cfg.data) == cfg


def test_experiment_yaml_records_the_model_and_datasets_that_ran(
    make_config, tiny_data, tiny_datasets
):
    from kpdiff import GaussianHeatmapCodec, HeatmapRegressor
    from kpdiff.data import AugmentConfig, TopDownClipDataset
    from kpdiff.engine.data import Datasets

    torch.manual_seed(0)
    model = HeatmapRegressor.from_preset("diffpose-tiny", sigma=3.0)
    given = tiny_datasets.train
    train_set = TopDownClipDataset(
        given.samples,
        schema=given.schema,
        config=given.config,
        augment=AugmentConfig(rotation=10.0, flip_prob=0.0),
        codec=GaussianHeatmapCodec(model.config.heatmap_size, sigma=3.0),
    )
    datasets = Datasets(train=train_set, val=None, val_videos=[], schema=given.schema)
    cfg = make_config()
    cfg.optim.max_steps = 1
    train(cfg, model=model, datasets=datasets)
    run = Path(cfg.runtime.output_dir)
    ran = load_config(run / "experiment.yaml")
    assert "train(model=...)" in ran.model.custom["note"]
    assert {k: v for k, v in ran.model.custom.items() if k != "note"} == {
        "class": "kpdiff.regressor.HeatmapRegressor",
        "config": model.config.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    data = ran.data.custom
    assert "train(datasets=...)" in data["note"]
    assert data["schema"] == "posetrack" and data["val"] is None  # no validation ran
    ran_train = data["train"]
    assert ran_train["class"] == "kpdiff.data.clips.TopDownClipDataset"
    assert ran_train["clips"] == len(train_set)
    assert ran_train["augment"]["rotation"] == 10.0 and ran_train["augment"]["flip_prob"] == 0.0
    assert ran_train["targets"] == {
        "heatmap_size": list(model.config.heatmap_size), "stride": 4.0, "sigma": 3.0,
    }  # fmt: skip
    assert ran_train["clip"]["input_size"] == list(given.config.input_size)
    assert Path(ran_train["frames"]).is_relative_to(Path(tiny_data).absolute())
    # the fields the config was given stay as given; the checkpoint holds the same record
    assert dataclasses.replace(ran, model=cfg.model, data=cfg.data) == cfg
    assert ran.data.augment == cfg.data.augment and ran.model.preset == cfg.model.preset
    assert load_config(latest_checkpoint(run) / "experiment.yaml") == ran

    # a run from that file builds its model and reads its data: the records are dropped
    ran.runtime.output_dir = str(run.parent / "again")
    ran.eval.max_clips = 2
    train(ran, datasets=tiny_datasets)
    again = load_config(run.parent / "again" / "experiment.yaml")
    assert again.model.custom is None and again.data.custom is None


def test_warmup_and_cosine_schedule_per_step(make_config, tiny_datasets):
    cfg = make_config()  # 9 steps
    cfg.optim.schedule, cfg.optim.warmup_steps, cfg.optim.min_lr_ratio = "cosine", 3, 0.1
    train(cfg, datasets=tiny_datasets)
    lrs = [r["lr"] for r in records(Path(cfg.runtime.output_dir)) if "loss" in r]
    peak = cfg.optim.lr
    assert lrs[:3] == pytest.approx([peak / 3, 2 * peak / 3, peak])  # linear warm-up
    assert all(a > b for a, b in itertools.pairwise(lrs[2:]))  # then decays
    # step s (1-based) after warm-up: r + (1 - r)(1 + cos(pi (s - 3) / 6)) / 2, down to r
    assert lrs[4] == pytest.approx(peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 2 / 6))))
    assert lrs[-1] == pytest.approx(peak * 0.1)


def test_warmup_with_milestones_keeps_the_milestones(make_config, tiny_datasets):
    cfg = make_config()  # 3 epochs x 3 steps, lr x0.1 after epoch 2
    cfg.optim.warmup_steps = 2
    train(cfg, datasets=tiny_datasets)
    lrs = [r["lr"] for r in records(Path(cfg.runtime.output_dir)) if "loss" in r]
    assert lrs == pytest.approx([5e-4] + [1e-3] * 5 + [1e-4] * 3)


def test_weight_average_is_validated_and_saved(make_config, tiny_datasets):
    cfg = make_config()
    cfg.optim.max_steps, cfg.optim.ema_decay = 3, 0.5
    train(cfg, datasets=tiny_datasets)
    run = Path(cfg.runtime.output_dir)
    best = DiffPose.from_pretrained(run / "best").state_dict()
    state = load_training_state(latest_checkpoint(run))
    # n_averaged and the averaged module's tensors; best/ holds exactly the average
    assert int(state["ema"]["n_averaged"]) == 3
    for k, v in best.items():
        assert torch.equal(state["ema"][f"module.{k}"], v), k
    raw = DiffPose.from_pretrained(latest_checkpoint(run)).state_dict()
    assert any(not torch.equal(best[k], raw[k]) for k in raw)
