"""DiffPose: config and presets, every ablation switch, train/predict, save/load, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from model_helpers import MICRO

from kpdiff.diffpose import PRESETS, DiffPose, DiffPoseConfig
from kpdiff.errors import KpdiffInputError


def batch(config: DiffPoseConfig, b: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    clips = torch.randn(b, 2 * config.delta + 1, 3, *config.input_size, generator=g)
    heatmaps = torch.rand(b, config.num_keypoints, *config.heatmap_size, generator=g)
    return clips, heatmaps, torch.ones(b, config.num_keypoints)


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_config_json_round_trip(name):
    config = PRESETS[name].replace(lookup="low_res", backbone_kwargs={"drop_path_rate": 0.1})
    again = DiffPoseConfig.from_json(config.to_json())
    assert again == config and isinstance(again.input_size, tuple)
    assert json.loads(config.to_json())["input_size"] == list(config.input_size)


def test_config_errors():
    with pytest.raises(KpdiffInputError, match="unknown options"):
        DiffPoseConfig.from_dict({"num_keypoints": 17, "widht": 3})
    with pytest.raises(KpdiffInputError, match="lookup"):
        DiffPoseConfig(lookup="medium")
    with pytest.raises(KpdiffInputError, match="fusion"):
        DiffPose(MICRO, fusion="max")
    with pytest.raises(KpdiffInputError, match="preset"):
        DiffPose.from_preset("diffpose-xl")
    # sizes are bounded: a damaged config.json (found by the fuzz suite: T = 2**64 filled
    # 18 GB computing betas) is refused before anything is allocated
    for option, value in [
        ("num_train_timesteps", 2**64),
        ("dim", 2**64),
        ("input_size", (2**20, 16)),
        ("encoder_depth", 2**64),
        ("delta", -1),
    ]:
        with pytest.raises(KpdiffInputError, match=rf"^{option}: expected .*in \[") as err:
            DiffPoseConfig(**{option: value})
        assert "\n" not in str(err.value)
    assert DiffPoseConfig(num_train_timesteps=10**5).num_train_timesteps == 10**5


def test_presets_and_overrides():
    assert PRESETS["diffpose-b"].heatmap_size == (64, 48)
    assert (PRESETS["diffpose-b"].num_samples, PRESETS["diffpose-b"].steps) == (10, 4)
    assert PRESETS["diffpose-b"].delta == 2 and PRESETS["diffpose-b"].num_train_timesteps == 1000
    model = DiffPose.from_preset("diffpose-tiny", delta=2, lookup="none")
    assert model.config.delta == 2 and model.encoder.num_frames == 5
    assert model.codec.heatmap_size == (32, 24) and model.codec.input_size == (128, 96)
    kwargs = dict(MICRO.to_dict(), num_keypoints=3)  # DiffPose(num_keypoints=3, ...)
    assert DiffPose(**kwargs).config == MICRO.replace(num_keypoints=3)


# ------------------------------------------------------------------------ train & predict


def test_tiny_preset_forward_backward():
    model = DiffPose.from_preset("diffpose-tiny")
    clips, heatmaps, weights = batch(model.config, b=2)
    loss = model.loss(clips, heatmaps, weights, generator=torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert model.encoder.backbone.patch_embed.proj.weight.grad.abs().sum() > 0
    assert model.decoder.head[-1].weight.grad.abs().sum() > 0
    model.eval()
    result = model.predict(clips, num_samples=2, steps=2)
    assert result.keypoints.shape == (2, 17, 2) and result.heatmaps.shape == (2, 17, 32, 24)


@settings(max_examples=6, deadline=None)
@given(
    lookup=st.sampled_from(["full", "low_res", "none"]),
    fusion=st.sampled_from(["sum", "concat"]),
    delta=st.integers(0, 2),
    b=st.integers(1, 2),
)
def test_every_switch_trains_and_predicts(lookup, fusion, delta, b):
    config = MICRO.replace(lookup=lookup, fusion=fusion, delta=delta)
    model = DiffPose(config)
    clips, heatmaps, weights = batch(config, b=b)
    assert model.condition(clips).batch_size == b
    model.loss(clips, heatmaps, weights).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert sum(g is not None and bool(g.abs().sum() > 0) for g in grads) > 0.9 * len(grads)
    result = model.predict(clips, num_samples=2, steps=1)
    assert result.keypoints.shape == (b, 5, 2) and result.scores.shape == (b, 5)
    assert result.spread.shape == (b, 5) and result.heatmaps.shape == (b, 5, 16, 12)


def test_ablation_structure():
    assert len(DiffPose(MICRO).decoder.blocks) == 3
    assert len(DiffPose(MICRO, lookup="low_res").decoder.blocks) == 1
    direct = DiffPose(MICRO, lookup="none", delta=0)
    assert not direct.decoder.blocks[0].lookup and direct.encoder.num_frames == 1
    assert DiffPose(MICRO, fusion="concat").decoder.fusion.proj is not None


@pytest.mark.parametrize("n, steps", [(1, 1), (1, 4), (10, 1), (10, 4)])
def test_predict_any_n_and_steps_calls_condition_once(n, steps, monkeypatch):
    model = DiffPose(MICRO).eval()
    clips = batch(MICRO)[0]
    calls, denoise_calls = [], []
    condition, denoise = model.condition, model.denoise
    monkeypatch.setattr(model, "condition", lambda c: calls.append(1) or condition(c))
    monkeypatch.setattr(
        model, "denoise", lambda x, t, c: denoise_calls.append(x.shape[0]) or denoise(x, t, c)
    )
    result = model.predict(clips, num_samples=n, steps=steps)
    assert calls == [1]
    assert denoise_calls == [n * 2] * steps  # N hypotheses as one batch, one call per step
    assert result.hypothesis_keypoints.shape == (n, 2, 5, 2)


def test_predict_reuses_cond():
    model = DiffPose(MICRO).eval()
    clips = batch(MICRO)[0]
    cond = model.condition(clips)
    a = model.predict(clips, generator=torch.Generator().manual_seed(3))
    b = model.predict(cond=cond, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a.heatmaps, b.heatmaps)
    with pytest.raises(KpdiffInputError, match="clips or cond"):
        model.predict()


# ------------------------------------------------------------------------------ save/load


def test_save_load_round_trip(tmp_path):
    model = DiffPose(MICRO, lookup="low_res", fusion="concat").eval()
    model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    again = DiffPose.from_pretrained(tmp_path / "ckpt").eval()
    assert again.config == model.config
    clips = batch(MICRO)[0]
    a = model.predict(clips, generator=torch.Generator().manual_seed(0))
    b = again.predict(clips, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a.heatmaps, b.heatmaps, rtol=0, atol=0)
    torch.testing.assert_close(a.keypoints, b.keypoints, rtol=0, atol=0)


def test_cnn_backbone_trains_predicts_and_round_trips(tmp_path):
    """A timm CNN in place of the ViT: every trainable parameter learns, and it saves/loads."""
    config = MICRO.replace(backbone="resnet18", backbone_kwargs={})
    model = DiffPose(config)
    clips, heatmaps, weights = batch(config)
    model.loss(clips, heatmaps, weights).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert model.encoder.backbone.layer3[0].downsample[0].weight.grad.abs().sum() > 0
    model.eval().save_pretrained(tmp_path / "ckpt")
    again = DiffPose.from_pretrained(tmp_path / "ckpt").eval()
    a = model.predict(clips, num_samples=2, steps=2, generator=torch.Generator().manual_seed(0))
    b = again.predict(clips, num_samples=2, steps=2, generator=torch.Generator().manual_seed(0))
    assert a.keypoints.shape == (2, 5, 2)
    torch.testing.assert_close(a.heatmaps, b.heatmaps, rtol=0, atol=0)


def test_load_errors(tmp_path):
    with pytest.raises(KpdiffInputError, match=r"config\.json does not exist"):
        DiffPose.from_pretrained(tmp_path)
    DiffPose(MICRO).save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(MICRO.replace(decoder_dims=(32, 16, 4)).to_json())
    with pytest.raises(KpdiffInputError, match=r"does not match config\.json.*shape"):
        DiffPose.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(MICRO.replace(lookup="none").to_json())
    with pytest.raises(KpdiffInputError, match="unexpected"):
        DiffPose.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(KpdiffInputError, match=r"config\.json"):
        DiffPose.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(KpdiffInputError, match=r"model\.safetensors does not exist"):
        DiffPose.from_pretrained(tmp_path)


def test_state_dict_diff_names_missing_unexpected_and_reshaped_keys(tmp_path):
    """The one comparison behind from_pretrained, the engine's resume and backbone loading."""
    import subprocess
    import sys

    from kpdiff.io import state_dict_diff

    own = {"a": torch.zeros(2), "b": torch.zeros(3, 4), "c": torch.zeros(1)}
    loaded = {"b": torch.zeros(4, 3), "c": torch.ones(1), "z": torch.zeros(1), "y": torch.zeros(1)}
    assert state_dict_diff(own, loaded) == {
        "missing": ["a"],
        "unexpected": ["y", "z"],
        "shape": ["b"],
    }
    assert state_dict_diff(own, dict(own)) == {"missing": [], "unexpected": [], "shape": []}

    DiffPose(MICRO).save_pretrained(tmp_path)  # from_pretrained shows both shapes of a name
    (tmp_path / "config.json").write_text(MICRO.replace(decoder_dims=(32, 16, 4)).to_json())
    with pytest.raises(KpdiffInputError, match=r"shape \(\d+\): \['[\w.]+: file \[.*\], config \["):
        DiffPose.from_pretrained(tmp_path)

    code = (
        "import sys, kpdiff.io; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr  # io needs no torch


# ------------------------------------------------------------------------------ bad input


def test_bad_inputs_are_named():
    model = DiffPose(MICRO)
    clips, heatmaps, weights = batch(MICRO)
    with pytest.raises(KpdiffInputError, match=r"clips: .*T = 2δ\+1 = 3 .*got 5 frames"):
        model.loss(torch.randn(2, 5, 3, 64, 48), heatmaps, weights)
    with pytest.raises(KpdiffInputError, match=r"clips: expected frames of size 64×48.*128×96"):
        model.predict(torch.randn(2, 3, 3, 128, 96))
    with pytest.raises(KpdiffInputError, match=r"heatmaps: expected shape \[2, 5, 16, 12\]"):
        model.loss(clips, torch.rand(2, 17, 16, 12), weights)
    with pytest.raises(KpdiffInputError, match="weights"):
        model.loss(clips, heatmaps, torch.ones(2, 17))
    with pytest.raises(KpdiffInputError, match="num_samples"):
        model.predict(clips, num_samples=0)
    with pytest.raises(KpdiffInputError, match="cond: expected the DecoderCondition from"):
        model.predict(cond=model.encoder(clips))


@pytest.mark.slow
def test_diffpose_b_shapes_and_gradients():
    """The paper's model: ViT-B/16 × 5 frames at 256×192 (several seconds on a CPU)."""
    model = DiffPose.from_preset("diffpose-b")
    clips, heatmaps, weights = batch(model.config, b=1)
    cond = model.condition(clips)
    assert model.encoder(clips).shape == (1, 256, 16, 12)
    pyramid = [(1, 128, 16, 12), (1, 64, 32, 24), (1, 32, 64, 48)]
    assert [tuple(c.shape) for c in cond.pyramid] == pyramid
    assert [tuple(c.shape) for c in cond.terms] == pyramid  # each scale's feature term
    x_t = torch.randn(1, 17, 64, 48)
    assert model.denoise(x_t, torch.tensor([999]), cond).shape == (1, 17, 64, 48)
    model.loss(clips, heatmaps, weights).backward()
    assert model.encoder.backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_the_schema_is_recorded_and_checked():
    from kpdiff.data.schemas import COCO, POSETRACK

    config = DiffPoseConfig(schema=POSETRACK.name)
    assert DiffPoseConfig.from_json(config.to_json()).schema == POSETRACK.name
    assert DiffPoseConfig.from_dict({}).schema is None  # older checkpoints: not recorded
    config.check_schema(POSETRACK)
    with pytest.raises(KpdiffInputError, match="relabel"):
        config.check_schema(COCO, "--schema")
    DiffPoseConfig().check_schema(COCO)  # not recorded: any schema of 17 joints
    with pytest.raises(KpdiffInputError, match="schema: expected a string"):
        DiffPoseConfig(schema=17)
