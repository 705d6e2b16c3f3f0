"""SpatioTemporalEncoder: shapes for every δ, gradients, freezing, checkpointing, bad input, and
loading backbone weights from local timm / MAE / ViTPose / safetensors state dicts."""

from __future__ import annotations

import pytest
import timm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed

from kpdiff.encoder import SpatioTemporalEncoder, load_backbone_state_dict
from kpdiff.errors import KpdiffInputError

TINY = {"depth": 1, "embed_dim": 48, "num_heads": 3}
SIZE = (64, 48)


def encoder(**kw) -> SpatioTemporalEncoder:
    args = dict(
        backbone="vit_tiny_patch16_224", backbone_kwargs=TINY, input_size=SIZE, delta=1,
        dim=32, depth=1, heads=4, mlp_ratio=2.0,
    )  # fmt: skip
    args.update(kw)
    return SpatioTemporalEncoder(**args)


def backbone(size=SIZE, **kw) -> torch.nn.Module:
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=size, num_classes=0, **TINY, **kw
    )


@settings(max_examples=8, deadline=None)
@given(delta=st.integers(0, 2), b=st.integers(1, 3), depth=st.integers(0, 2))
def test_shapes_for_every_delta(delta, b, depth):
    enc = encoder(delta=delta, depth=depth)
    clips = torch.randn(b, 2 * delta + 1, 3, *SIZE)
    assert enc.num_frames == 2 * delta + 1
    assert enc(clips).shape == (b, 32, 4, 3)
    assert enc.frame_features(clips[:, 0]).shape == (b, 48, 4, 3)


def test_gradients_reach_backbone_and_temporal_layers():
    enc = encoder()
    enc(torch.randn(2, 3, 3, *SIZE)).square().mean().backward()
    for name, p in enc.named_parameters():
        if name != "backbone.cls_token":  # only reaches patches through attention; may be tiny
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_frames_are_not_interchangeable():
    """The learnable spatio-temporal position embedding tells the frames apart."""
    enc = encoder().eval()
    clips = torch.randn(1, 3, 3, *SIZE)
    assert not torch.allclose(enc(clips), enc(clips.flip(1)), atol=1e-5)


def test_freeze_backbone():
    enc = encoder(freeze_backbone=True)
    enc.train()
    assert not enc.backbone.training and enc.blocks.training
    enc(torch.randn(1, 3, 3, *SIZE)).sum().backward()
    assert all(p.grad is None for p in enc.backbone.parameters())
    assert enc.patch_embed.weight.grad is not None


def test_gradient_checkpointing_matches():
    torch.manual_seed(0)
    plain = encoder()
    ckpt = encoder(gradient_checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    clips = torch.randn(2, 3, 3, *SIZE)
    out_a, out_b = plain(clips), ckpt(clips)
    torch.testing.assert_close(out_a, out_b)
    out_a.sum().backward()
    out_b.sum().backward()
    torch.testing.assert_close(plain.pos_embed.grad, ckpt.pos_embed.grad)


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((1, 5, 3, 64, 48), r"3 frames for δ = 1\), got 5 frames"),
        ((1, 3, 3, 128, 96), "64×48"),
        ((1, 3, 1, 64, 48), r"\[B, T=3, 3, 64, 48\]"),
        ((3, 3, 64, 48), "clips"),
    ],
)
def test_bad_clips(shape, match):
    with pytest.raises(KpdiffInputError, match=match):
        encoder()(torch.zeros(shape))


def test_bad_construction():
    with pytest.raises(KpdiffInputError, match="divisible by 16"):
        encoder(input_size=(60, 48))
    with pytest.raises(KpdiffInputError, match="delta"):
        encoder(delta=-1)
    with pytest.raises(KpdiffInputError, match="stride 16"):
        encoder(backbone="vit_small_patch8_224")


# ------------------------------------------------------------------------ backbone weights


def assert_loaded(enc: SpatioTemporalEncoder, ref: dict[str, torch.Tensor], skip=()) -> None:
    own = enc.backbone.state_dict()
    for k, v in ref.items():
        if k not in skip:
            torch.testing.assert_close(own[k], v, msg=k)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_load_timm_style(tmp_path, suffix):
    ref = backbone().state_dict()
    path = tmp_path / f"vit{suffix}"
    torch.save(ref, path) if suffix == ".pth" else save_file(ref, str(path))
    assert_loaded(encoder(backbone_weights=path), ref)
    enc = encoder()
    enc.load_backbone(path)
    assert_loaded(enc, ref)


def test_load_mae_style_resamples_pos_embed(tmp_path):
    """MAE: {"model": …} at 224×224 (a 14×14 grid), with decoder keys and a classifier head."""
    ref = backbone(size=(224, 224)).state_dict()
    ckpt = dict(ref, **{"decoder_embed.weight": torch.zeros(4, 48), "mask_token": torch.zeros(1)})
    ckpt["head.weight"] = torch.zeros(10, 48)
    torch.save({"model": ckpt, "epoch": 7}, tmp_path / "mae.pth")
    enc = encoder(backbone_weights=tmp_path / "mae.pth")
    assert_loaded(enc, ref, skip=("pos_embed",))
    pos = ref["pos_embed"]
    want = torch.cat(
        [pos[:, :1], resample_abs_pos_embed(pos[:, 1:], [4, 3], [14, 14], num_prefix_tokens=0)], 1
    )
    torch.testing.assert_close(enc.backbone.pos_embed.data, want)


def test_load_vitpose_style(tmp_path):
    """ViTPose/mmpose: {"state_dict": {"backbone.…", "keypoint_head.…"}}, last_norm, a class slot
    in pos_embed but no class token: the slot is folded into every patch position."""
    kw = {"class_token": False, "global_pool": "avg", "fc_norm": False}
    ref = backbone(**kw).state_dict()
    slot = torch.randn(1, 1, 48)
    ckpt = {
        "backbone." + ("last_norm." + k[5:] if k.startswith("norm.") else k): v
        for k, v in ref.items()
    }
    ckpt["backbone.pos_embed"] = torch.cat([slot, ref["pos_embed"] - slot], 1)
    ckpt["keypoint_head.final_layer.weight"] = torch.zeros(17, 48, 1, 1)
    torch.save({"state_dict": ckpt, "meta": {"epoch": 210}}, tmp_path / "vitpose.pth")
    enc = encoder(backbone_kwargs=dict(TINY, **kw), backbone_weights=tmp_path / "vitpose.pth")
    assert_loaded(enc, ref)
    assert "norm.weight" in load_backbone_state_dict(tmp_path / "vitpose.pth")


def test_vitpose_into_class_token_backbone_hints(tmp_path):
    ref = backbone(class_token=False, global_pool="avg", fc_norm=False).state_dict()
    torch.save({"state_dict": {"backbone." + k: v for k, v in ref.items()}}, tmp_path / "vp.pth")
    with pytest.raises(KpdiffInputError, match=r"(?s)missing keys: cls_token.*class_token"):
        encoder(backbone_weights=tmp_path / "vp.pth")


def test_wrong_keys_are_listed(tmp_path):
    ref = backbone().state_dict()
    ref["blocks.7.attn.qkv.weight"] = ref.pop("blocks.0.attn.qkv.weight")
    ref["patch_embed.proj.bias"] = torch.zeros(5)
    torch.save(ref, tmp_path / "bad.pth")
    with pytest.raises(KpdiffInputError) as err:
        encoder(backbone_weights=tmp_path / "bad.pth")
    msg = str(err.value)
    assert "missing keys: blocks.0.attn.qkv.weight" in msg
    assert "unexpected keys: blocks.7.attn.qkv.weight" in msg
    assert "patch_embed.proj.bias: file [5] vs model [48]" in msg


def test_unreadable_files(tmp_path):
    with pytest.raises(KpdiffInputError, match="no such file"):
        encoder(backbone_weights=tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(KpdiffInputError, match="cannot read"):
        encoder(backbone_weights=tmp_path / "junk.pth")
    torch.save({"model": {"a": 1}}, tmp_path / "odd.pth")
    with pytest.raises(KpdiffInputError, match="state dict of tensors"):
        encoder(backbone_weights=tmp_path / "odd.pth")


# ------------------------------------------------------------------------ CNN backbones

CNNS = ["resnet18", "convnext_atto", "efficientnet_b0", "hrnet_w18_small"]


@pytest.mark.parametrize("name", CNNS)
def test_cnn_backbones_give_their_stride_16_stage(name):
    size = (64, 32) if name.startswith("hrnet") else SIZE  # HRNet: multiples of 32
    enc = encoder(backbone=name, backbone_kwargs={}, input_size=size)
    assert enc.backbone_stage is not None
    clips = torch.randn(2, 3, 3, *size)
    out = enc(clips)
    assert out.shape == (2, 32, size[0] // 16, size[1] // 16) and torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(p.grad is not None for p in enc.backbone.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", ["resnet18", "convnext_atto"])  # convnext: flattened names
def test_cnn_weights_from_a_full_timm_checkpoint(tmp_path, name):
    """A classifier checkpoint loads into the cut backbone: features equal the full model's."""
    full = timm.create_model(name, pretrained=False).eval()
    with torch.no_grad():
        for p in full.parameters():
            p.add_(0.01 * torch.randn_like(p))  # not timm's init, so a load is visible
    path = tmp_path / f"{name}.pth"
    torch.save({"state_dict": full.state_dict()}, path)
    enc = encoder(backbone=name, backbone_kwargs={}).eval()
    frames = torch.randn(2, 3, *SIZE)
    assert not torch.allclose(enc.frame_features(frames), _stride16(full, frames))
    enc.load_backbone(path)
    torch.testing.assert_close(enc.frame_features(frames), _stride16(full, frames))
    again = encoder(backbone=name, backbone_kwargs={}, backbone_weights=path).eval()
    torch.testing.assert_close(again.frame_features(frames), _stride16(full, frames))


def _stride16(model: torch.nn.Module, frames: torch.Tensor) -> torch.Tensor:
    reductions = [f["reduction"] for f in model.feature_info]
    with torch.no_grad():
        return model.forward_intermediates(
            frames, indices=[reductions.index(16)], intermediates_only=True
        )[0]


def test_cnn_checkpoint_missing_a_used_key_is_refused(tmp_path):
    sd = timm.create_model("resnet18", pretrained=False).state_dict()
    del sd["layer3.0.conv1.weight"]
    del sd["layer4.0.conv1.weight"]  # past stride 16: not needed, not reported
    torch.save(sd, tmp_path / "r18.pth")
    with pytest.raises(KpdiffInputError, match=r"missing keys: layer3\.0\.conv1\.weight\n"):
        encoder(backbone="resnet18", backbone_kwargs={}).load_backbone(tmp_path / "r18.pth")


def test_checkpointing_a_cnn_changes_nothing_but_hrnet_refuses_by_name():
    clips = torch.randn(2, 3, 3, *SIZE)
    outs = []
    for enable in (False, True):
        torch.manual_seed(0)
        enc = encoder(backbone="resnet18", backbone_kwargs={}, gradient_checkpointing=enable)
        outs.append(enc(clips))
    torch.testing.assert_close(outs[0], outs[1])
    with pytest.raises(KpdiffInputError, match="gradient_checkpointing: the backbone"):
        encoder(backbone="hrnet_w18_small", backbone_kwargs={}, input_size=(64, 32),
                gradient_checkpointing=True)  # fmt: skip


def test_unknown_backbone_and_unfit_sizes_are_named():
    with pytest.raises(KpdiffInputError, match="not_a_model"):
        encoder(backbone="not_a_model")
    with pytest.raises(KpdiffInputError, match=r"'hrnet_w18_small' cannot run on 64×48 frames"):
        encoder(backbone="hrnet_w18_small", backbone_kwargs={})
