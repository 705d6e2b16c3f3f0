"""Experiment configs: YAML round trip, overrides, errors that name the key and the file, atomic
writes, and the example YAML files (paper settings; synthetic_cpu.yaml == demo_config())."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from engine_helpers import REPO, tiny_experiment

from kpdiff.data.clips import AugmentConfig
from kpdiff.data.synthetic import SyntheticConfig
from kpdiff.diffpose_config import PRESETS, DiffPoseConfig, DiffPoseOverrides
from kpdiff.engine.config import (
    ExperimentConfig,
    apply_overrides,
    config_from_dict,
    load_config,
    save_config,
    write_text_atomic,
)
from kpdiff.errors import KpdiffInputError

CONFIGS = REPO / "examples" / "diffpose" / "configs"


def changed_config() -> ExperimentConfig:
    """A config with a non-default value in every section, nested ones included."""
    cfg = tiny_experiment("somewhere/data", "somewhere/run")
    cfg.model.overrides = {"delta": 0, "lookup": "none"}
    cfg.data.augment = AugmentConfig(rotation=30.0, scale_range=(0.7, 1.3), upper_body=(0, 1, 2))
    cfg.data.val_boxes = "boxes.json"
    cfg.data.synthetic = SyntheticConfig(num_videos=3, split_sizes={"val": (2, 5)}, blur_prob=0.0)
    cfg.optim.grad_clip = None
    cfg.optim.max_steps = 7
    cfg.optim.milestones = (1, 2)
    cfg.eval.max_clips = None
    cfg.runtime.amp = "none"
    return cfg


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("make", [ExperimentConfig, changed_config], ids=["defaults", "changed"])
def test_yaml_round_trip(tmp_path, make):
    cfg = make()
    save_config(cfg, tmp_path / "exp.yaml")
    back = load_config(tmp_path / "exp.yaml")
    assert back == cfg
    assert isinstance(back.optim.milestones, tuple)
    assert isinstance(back.data.augment, AugmentConfig)
    assert isinstance(back.data.augment.scale_range, tuple)
    assert json.loads(json.dumps(cfg.to_dict())) == cfg.to_dict()  # plain JSON types only


def test_config_from_dict_keeps_defaults_of_missing_sections():
    cfg = config_from_dict({"optim": {"lr": 0.1}})
    assert cfg.optim.lr == 0.1 and cfg.optim.epochs == 60 and cfg.model == ExperimentConfig().model
    assert config_from_dict({}) == ExperimentConfig()


def test_empty_file_gives_defaults(tmp_path):
    assert load_config(write(tmp_path / "e.yaml", "")) == ExperimentConfig()


def test_yaml_1_1_exponent_without_dot_is_a_number(tmp_path):
    # YAML 1.1 reads 1e-3 as a string; a float field still accepts it.
    cfg = load_config(write(tmp_path / "e.yaml", "optim:\n  lr: 1e-3\n  weight_decay: 5e-2\n"))
    assert cfg.optim.lr == 1e-3 and cfg.optim.weight_decay == 0.05
    assert isinstance(cfg.optim.lr, float)


def test_int_is_accepted_for_float_fields(tmp_path):
    cfg = load_config(write(tmp_path / "e.yaml", "optim:\n  grad_clip: 2\n"))
    assert cfg.optim.grad_clip == 2.0 and isinstance(cfg.optim.grad_clip, float)


# -------------------------------------------------------------------------------- overrides


def test_overrides_change_single_fields():
    base = ExperimentConfig()
    cfg = apply_overrides(
        base,
        [
            "optim.lr=1e-3",
            "optim.milestones=[5, 8]",
            "model.overrides={delta: 0}",
            "data.val_boxes=gt",
            "optim.max_steps=12",
            "optim.grad_clip=null",
            "runtime.progress=false",
            "data.augment.rotation=30",
            "data.augment.scale_range=[0.8, 1.2]",
        ],
    )
    assert cfg.optim.lr == 1e-3
    assert cfg.optim.milestones == (5, 8)
    assert cfg.model.overrides.changes() == {"delta": 0}
    assert cfg.optim.max_steps == 12 and cfg.optim.grad_clip is None
    assert cfg.runtime.progress is False
    assert cfg.data.augment.rotation == 30.0 and cfg.data.augment.scale_range == (0.8, 1.2)
    # everything else, and the input, unchanged
    assert dataclasses.replace(cfg, optim=base.optim, model=base.model, runtime=base.runtime,
                               data=base.data) == base  # fmt: skip
    assert base == ExperimentConfig()
    assert cfg.optim.epochs == base.optim.epochs and cfg.data.root == base.data.root


def test_load_config_applies_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    save_config(changed_config(), path)
    cfg = load_config(path, ["optim.epochs=9", "model.overrides={delta: 1}"])
    assert cfg.optim.epochs == 9 and cfg.model.overrides.changes() == {"delta": 1}
    assert cfg.optim.max_steps == 7  # from the file


def test_a_nested_path_changes_one_field_of_a_nested_section():
    base = demo_config_for_tests()
    cfg = apply_overrides(
        base, ["model.overrides.delta=0", "data.synthetic.num_videos=5", "data.synthetic.seed=3"]
    )
    assert cfg.model.overrides.changes() == {**base.model.overrides.changes(), "delta": 0}
    assert (cfg.data.synthetic.num_videos, cfg.data.synthetic.seed) == (5, 3)
    assert cfg.data.synthetic.split_sizes == base.data.synthetic.split_sizes  # kept
    assert apply_overrides(base, ["data.synthetic=null"]).data.synthetic is None
    # the old command-line form still means "never build"
    assert apply_overrides(base, ["data.synthetic=false"]).data.synthetic is None
    with pytest.raises(KpdiffInputError, match=r"data\.synthetic_videos.*now data\.synthetic"):
        apply_overrides(base, ["data.synthetic_videos=4"])


def demo_config_for_tests() -> ExperimentConfig:
    from kpdiff.engine.demo import demo_config

    return demo_config()


def test_model_overrides_are_typed_from_the_model_config():
    # one field per DiffPoseConfig option, of its type or None, and nothing else
    names = [f.name for f in dataclasses.fields(DiffPoseOverrides)]
    assert names == [f.name for f in dataclasses.fields(DiffPoseConfig)]
    cfg = ExperimentConfig()
    cfg.model.overrides = {"delta": 0, "decoder_dims": [8, 4, 2], "mlp_ratio": 2}  # a mapping
    assert isinstance(cfg.model.overrides, DiffPoseOverrides)
    assert cfg.model.overrides.decoder_dims == (8, 4, 2) and cfg.model.overrides.mlp_ratio == 2.0
    built = cfg.model.diffpose_config()
    assert built == PRESETS["diffpose-tiny"].replace(delta=0, decoder_dims=(8, 4, 2), mlp_ratio=2.0)
    assert cfg.to_dict()["model"]["overrides"] == {"delta": 0, "mlp_ratio": 2.0,
                                                   "decoder_dims": [8, 4, 2]}  # fmt: skip
    assert "None" not in repr(cfg.model.overrides)  # the repr shows what is set
    with pytest.raises(KpdiffInputError, match=r"model\.overrides.*lookup.*maybe"):
        cfg.model.overrides = {"lookup": "maybe"}
    with pytest.raises(KpdiffInputError, match=r"model\.overrides.*widht"):
        cfg.model.overrides = {"widht": 3}


def test_run_files_of_the_old_data_layout_still_load_into_the_same_build(tmp_path):
    # kpdiff 0.1 wrote data.synthetic: true and flat synthetic_* keys into experiment.yaml
    old = tmp_path / "experiment.yaml"
    old.write_text(
        "data:\n  root: d\n  synthetic: true\n  synthetic_videos: 1000\n"
        "  synthetic_frames: 10\n  synthetic_val_videos: 20\n  synthetic_val_frames: 30\n"
        "  synthetic_seed: 0\n"
    )
    with pytest.warns(FutureWarning, match=r"experiment\.yaml: data\.synthetic_videos"):
        cfg = load_config(old)
    demo = demo_config_for_tests().data.synthetic
    assert cfg.data.synthetic == demo
    assert cfg.data.synthetic.fingerprint() == demo.fingerprint()  # the same videos, no rebuild
    # the old defaults: validation as large as training
    with pytest.warns(FutureWarning):
        cfg = config_from_dict({"data": {"synthetic_videos": 4, "val_split": "v"}})
    assert cfg.data.synthetic.size_of("v") == (4, 30) and cfg.data.synthetic.size_of("train") == (
        4,
        30,
    )
    off = config_from_dict({"data": {"synthetic": False}})
    assert off.data.synthetic is None


@pytest.mark.parametrize(
    ("section", "names"),
    [
        ({"schema": "coco"}, ["data.synthetic.schema", "posetrack", "coco"]),
        ({"rig": {"root": "x"}}, ["data.synthetic.rig"]),
        ({"num_videos": 0}, ["data.synthetic", "num_videos"]),
        ({"split_sizes": {"val": [1]}}, ["data.synthetic.split_sizes.val"]),
        ({"videos": 3}, ["data.synthetic", "videos", "num_videos"]),
    ],
)
def test_a_bad_synthetic_section_is_named(section, names):
    with pytest.raises(KpdiffInputError) as err:
        config_from_dict({"data": {"synthetic": section}}, "exp.yaml")
    for name in ["exp.yaml", *names]:
        assert name in str(err.value)


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("optim.lrr=1", ["optim.lrr"]),
        ("optimizer.lr=1", ["optimizer.lr"]),
        ("lr=1", ["lr=1", "section.field=value"]),
        ("optim.lr", ["optim.lr", "section.field=value"]),
        ("optim.lr=fast", ["optim.lr", "fast"]),
        ("optim.epochs=1.5", ["optim.epochs", "1.5"]),
        ("optim.milestones=3", ["optim.milestones"]),
        ("data.augment.rotaton=3", ["data.augment.rotaton"]),
        ("model.overrides=[delta]", ["model.overrides"]),
        ("optim.lr=[1, 2", ["optim.lr", "YAML"]),
    ],
)
def test_bad_overrides_are_rejected_naming_the_key(override, names):
    with pytest.raises(KpdiffInputError) as err:
        apply_overrides(ExperimentConfig(), [override])
    for name in names:
        assert name in str(err.value)


# ------------------------------------------------------------------ errors name key and file


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("optim:\n  lrr: 0.1\n", ["lrr", "optim"]),
        ("optimizer:\n  lr: 0.1\n", ["optimizer"]),
        ("data:\n  augment:\n    rotaton: 3\n", ["rotaton", "data.augment"]),
        ("optim:\n  lr: fast\n", ["optim.lr", "fast"]),
        ("optim:\n  epochs: 2.5\n", ["optim.epochs"]),
        ("optim:\n  batch_size: true\n", ["optim.batch_size"]),
        ("runtime:\n  progress: 'yes'\n", ["runtime.progress"]),
        ("optim:\n  milestones: 20\n", ["optim.milestones"]),
        ("optim:\n  milestones: [20, x]\n", ["optim.milestones"]),
        ("data:\n  augment:\n    scale_range: [0.5]\n", ["data.augment.scale_range"]),
        ("model:\n  overrides: [1]\n", ["model.overrides"]),
        ("model:\n  overrides: {delt: 0}\n", ["model.overrides", "delt"]),
        ("model:\n  preset: diffpose-huge\n", ["model.preset", "diffpose-huge"]),
        ("model:\n  overrides: {lookup: maybe}\n", ["model.overrides", "maybe"]),
        ("data:\n  edge: wrap\n", ["data.edge", "wrap"]),
        ("runtime:\n  device: gpu\n", ["runtime.device", "gpu"]),
        ("runtime:\n  amp: fp8\n", ["runtime.amp", "fp8"]),
        ("runtime:\n  log_every: 0\n", ["runtime.log_every"]),
        ("optim:\n  batch_size: 0\n", ["optim.batch_size"]),
        ("eval:\n  max_clips: 0\n", ["eval.max_clips"]),
        ("optim: [1, 2]\n", ["optim"]),
        ("- 1\n- 2\n", ["mapping"]),
        ("optim:\n  lr: [0.1\n", ["YAML"]),
        # values of the right type that cannot work: refused before training starts
        ("optim:\n  grad_clip: -1\n", ["optim.grad_clip"]),
        ("optim:\n  gamma: -1\n", ["optim.gamma"]),
        ("optim:\n  max_steps: 0\n", ["optim.max_steps"]),
        ("optim:\n  lr: .nan\n", ["optim.lr"]),
        ("optim:\n  lr: -0.001\n", ["optim.lr"]),
        ("optim:\n  lr: .inf\n", ["optim.lr"]),
        ("optim:\n  weight_decay: -0.1\n", ["optim.weight_decay"]),
        ("optim:\n  milestones: [0]\n", ["optim.milestones"]),
        ("data:\n  workers: -1\n", ["data.workers"]),
        ("data:\n  augment:\n    flip_prob: 2\n", ["data.augment.flip_prob"]),
        ("data:\n  augment:\n    rotation: -30\n", ["data.augment.rotation"]),
        ("data:\n  augment:\n    scale_range: [1.3, 0.7]\n", ["data.augment.scale_range"]),
        ("data:\n  augment:\n    scale_range: [0, 1]\n", ["data.augment.scale_range"]),
        ("model:\n  overrides: {encoder_heads: 0}\n", ["encoder_heads"]),
        ("model:\n  overrides: {dim: '64'}\n", ["dim"]),
        ("model:\n  overrides: {sigma: .nan}\n", ["sigma"]),
    ],
)
def test_bad_file_is_rejected_naming_key_and_file(tmp_path, text, names):
    path = write(tmp_path / "bad_experiment.yaml", text)
    with pytest.raises(KpdiffInputError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message
    for name in names:
        assert name in message
    assert "\n" not in message


def test_non_utf8_file_is_named(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("optim:\n  lr: 0.1  # caf\xe9\n".encode("latin-1"))
    with pytest.raises(KpdiffInputError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "UTF-8" in str(err.value)


def test_a_config_built_in_python_is_checked_too():
    from kpdiff.engine.config import check_config

    cfg = ExperimentConfig()
    cfg.optim.lr = float("nan")
    with pytest.raises(KpdiffInputError, match=r"optim\.lr"):
        check_config(cfg)
    check_config(ExperimentConfig())  # the defaults are valid


def test_missing_file(tmp_path):
    with pytest.raises(KpdiffInputError, match="not found"):
        load_config(tmp_path / "nope.yaml")


# ---------------------------------------------------------------------------- atomic writes


def test_save_config_is_atomic_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "cfg" / "exp.yaml"
    for lr in (1e-3, 2e-3, 3e-3):
        cfg = changed_config()
        cfg.optim.lr = lr
        save_config(cfg, path)
    assert [p.name for p in path.parent.iterdir()] == ["exp.yaml"]
    assert load_config(path).optim.lr == 3e-3


def test_failed_write_keeps_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "exp.yaml"
    save_config(ExperimentConfig(), path)
    before = path.read_text()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("kpdiff.engine.config.os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_text_atomic(path, "garbage")
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["exp.yaml"]


def test_written_files_honour_the_umask(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        save_config(ExperimentConfig(), tmp_path / "exp.yaml")
    finally:
        os.umask(old)
    assert (tmp_path / "exp.yaml").stat().st_mode & 0o777 == 0o644


# -------------------------------------------------------------------- the example YAML files


def test_every_example_config_loads():
    files = sorted(CONFIGS.glob("*.yaml"))
    names = {p.name for p in files}
    expected = {"posetrack17", "posetrack18", "posetrack21", "synthetic_cpu"}
    assert {f"{n}.yaml" for n in expected} <= names
    for path in files:
        cfg = load_config(path)
        cfg.model.diffpose_config()  # preset and overrides resolve to a DiffPoseConfig
        # the file states every field explicitly
        data = yaml.safe_load(path.read_text())
        assert set(data) == set(cfg.to_dict()), path


@pytest.mark.parametrize("name", ["posetrack17", "posetrack18", "posetrack21"])
def test_paper_configs_hold_the_paper_settings(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    model = cfg.model.diffpose_config()
    assert cfg.model.preset == "diffpose-b"
    assert model.backbone == "vit_base_patch16_224"
    assert model.input_size == (256, 192) and model.heatmap_size == (64, 48)
    assert model.delta == 2 and model.num_train_timesteps == 1000
    assert model.num_samples == 10 and model.steps == 4
    assert (cfg.eval.num_samples, cfg.eval.steps) == (10, 4)
    o = cfg.optim
    assert (o.lr, o.epochs, o.milestones, o.gamma, o.batch_size) == (5e-4, 60, (20, 40), 0.1, 32)
    a = cfg.data.augment
    assert a.rotation == 45 and a.scale_range == (0.65, 1.35)
    assert a.flip_prob > 0 and a.half_body_prob > 0
    assert cfg.data.val_boxes != "gt" and cfg.data.val_boxes.endswith(".json")
    assert cfg.data.synthetic is None and cfg.data.min_box_score == 0.2
    assert "per GPU" in (CONFIGS / f"{name}.yaml").read_text()


def test_synthetic_cpu_yaml_is_the_demo_config():
    from kpdiff.engine.demo import demo_config

    cfg = load_config(CONFIGS / "synthetic_cpu.yaml")
    demo = demo_config()
    for c in (cfg, demo):  # output paths aside
        c.data.root = "DATA"
        c.runtime.output_dir = "RUN"
    assert cfg.to_dict() == demo.to_dict()
    assert cfg == demo
