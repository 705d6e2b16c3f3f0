"""SpatioTemporalEncoder: the paper's SpatioTemporal Representation Learner (STRL).

A clip of T = 2δ+1 frames centred on the key frame becomes one feature map 𝔽 [B, C, H/16, W/16]:

    frames ──► timm backbone (all B·T frames as ONE batch) ──► features [B·T, C_b, h, w]
           ──► patch embedding (linear C_b → C) ──► concat the T frames' tokens [B, T·h·w, C]
           ──► + learnable spatio-temporal position embedding
           ──► L pre-LN Transformer layers (every token attends to every frame)
           ──► LN ──► MLP over the T frames of each location [B, h·w, T·C] → [B, h·w, C] ──► 𝔽

The backbone is a plain ViT (patch 16: its tokens are the features, as in DiffPose) or any
timm model with a stage of stride 16 (ResNet, HRNet, ConvNeXt, EfficientNet, Swin…: read
through ``forward_intermediates`` and cut after that stage). With δ = 0 (one frame) the same
code runs with T = 1: the layers attend over the key frame's tokens only and the frame MLP
maps C → C. The backbone's weights come from a local file (timm, MAE or ViTPose layout),
never from a hub: see :func:`load_backbone_weights`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import timm
import torch
from einops import rearrange
from timm.layers import Mlp, resample_abs_pos_embed
from timm.models.vision_transformer import Block
from torch import nn
from torch.utils.checkpoint import checkpoint

from kpdiff.errors import KpdiffInputError
from kpdiff.io import state_dict_diff
from kpdiff.strides import PATCH_STRIDE  # 𝔽 is at 1/16 of the input

__all__ = [
    "Backbone",
    "SpatioTemporalEncoder",
    "build_backbone",
    "load_backbone_state_dict",
    "load_backbone_weights",
]


class SpatioTemporalEncoder(nn.Module):
    """Per-frame backbone features fused over space and time into the condition 𝔽.

    Args:
        backbone: a timm model name: a ViT-style model with patch 16 (built at ``input_size``;
            the 224 in a name is only timm's default size), or a CNN with a stride-16 stage
            (e.g. ``"resnet50"``, ``"hrnet_w32"``, ``"convnext_tiny"``), whose features at
            that stage are used. Default ``"vit_base_patch16_224"``.
        input_size: ``(H, W)`` of each frame. Default ``(256, 192)``.
        delta: δ, frames on each side of the key frame; T = 2δ + 1. Default ``2``.
        dim: C, the width of the tokens and of 𝔽. Default ``256``.
        depth: L, the number of spatio-temporal Transformer layers (0 allowed). Default ``4``.
        heads: attention heads of those layers. Default ``8``.
        mlp_ratio: hidden width of their MLPs and of the frame MLP, × ``dim``. Default ``4.0``.
        backbone_kwargs: extra keyword arguments for ``timm.create_model`` (e.g. ``depth``,
            ``embed_dim``, ``drop_path_rate``, ``class_token=False``). Default ``None``.
        backbone_weights: a local timm / MAE / ViTPose state dict (``.pth`` or ``.safetensors``)
            to load into the backbone. Default ``None`` (random init).
        freeze_backbone: keep the backbone fixed (no gradients, eval mode). Default ``False``.
        gradient_checkpointing: recompute activations in the backward pass of the backbone and
            the spatio-temporal layers to save memory. Default ``False``.

    Attributes:
        backbone_stage: the index of the timm stage whose features are used, ``None`` for a
            ViT's last tokens (see :func:`build_backbone`).

    Shapes:
        ``clips [B, T, 3, H, W] → 𝔽 [B, C, H/16, W/16]``.
    """

    def __init__(
        self,
        *,
        backbone: str = "vit_base_patch16_224",
        input_size: tuple[int, int] = (256, 192),
        delta: int = 2,
        dim: int = 256,
        depth: int = 4,
        heads: int = 8,
        mlp_ratio: float = 4.0,
        backbone_kwargs: Mapping[str, Any] | None = None,
        backbone_weights: str | Path | None = None,
        freeze_backbone: bool = False,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        h_in, w_in = (int(s) for s in input_size)
        if h_in % PATCH_STRIDE or w_in % PATCH_STRIDE or min(h_in, w_in) < PATCH_STRIDE:
            raise KpdiffInputError(
                f"input_size: expected (H, W) divisible by {PATCH_STRIDE}, got {tuple(input_size)}"
            )
        if not isinstance(delta, int) or delta < 0:
            raise KpdiffInputError(f"delta: expected an integer >= 0, got {delta!r}")
        if dim % heads:
            raise KpdiffInputError(f"dim: expected a multiple of heads = {heads}, got {dim}")
        self.input_size = (h_in, w_in)
        self.delta = delta
        self.num_frames = 2 * delta + 1
        self.feature_size = (h_in // PATCH_STRIDE, w_in // PATCH_STRIDE)
        self.dim = dim

        self.backbone, backbone_dim, self.backbone_stage = build_backbone(
            backbone, self.input_size, backbone_kwargs
        )
        if backbone_weights is not None:
            self.load_backbone(backbone_weights)

        h, w = self.feature_size
        t = self.num_frames
        self.patch_embed = nn.Linear(backbone_dim, dim)  # patch embedding: C_b → C
        self.pos_embed = nn.Parameter(torch.zeros(1, t * h * w, dim))  # spatio-temporal, learned
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(
            Block(dim, heads, mlp_ratio=mlp_ratio, qkv_bias=True) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.aggregate = Mlp(t * dim, int(dim * mlp_ratio), dim)  # MLP over the T frames

        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()
        self.gradient_checkpointing = False
        self.set_gradient_checkpointing(gradient_checkpointing)

    def set_gradient_checkpointing(self, enable: bool = True) -> None:
        """Turn activation recomputation on or off (backbone and spatio-temporal layers).

        Raises:
            KpdiffInputError: the backbone cannot recompute (timm's HRNet, for one).
        """
        if hasattr(self.backbone, "set_grad_checkpointing"):
            try:
                self.backbone.set_grad_checkpointing(enable)
            except (AssertionError, NotImplementedError) as err:
                raise KpdiffInputError(
                    f"gradient_checkpointing: the backbone {type(self.backbone).__name__} "
                    f"does not support it ({err or 'timm refuses'})"
                ) from err
        self.gradient_checkpointing = enable

    def train(self, mode: bool = True) -> SpatioTemporalEncoder:
        """As ``nn.Module.train``, but a frozen backbone stays in eval mode."""
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def load_backbone(self, path: str | Path) -> None:
        """Load a local timm / MAE / ViTPose state dict into the backbone (see
        :func:`load_backbone_weights`; a CNN cut at stride 16 ignores the later stages)."""
        load_backbone_weights(self.backbone, path, partial=self.backbone_stage is not None)

    def check_clips(self, clips: torch.Tensor, name: str = "clips") -> None:
        """Raise :class:`KpdiffInputError` unless ``clips`` is ``[B, T, 3, H, W]`` as configured."""
        t, (h, w) = self.num_frames, self.input_size
        spec = f"[B, T={t}, 3, {h}, {w}] (T = 2δ+1 = {t} frames for δ = {self.delta})"
        if not isinstance(clips, torch.Tensor):
            raise KpdiffInputError(f"{name}: expected a tensor {spec}, got {type(clips).__name__}")
        shape = list(clips.shape)
        if clips.dim() != 5 or shape[2] != 3:
            raise KpdiffInputError(f"{name}: expected shape {spec}, got {shape}")
        if shape[1] != t:
            raise KpdiffInputError(f"{name}: expected {spec}, got {shape[1]} frames: {shape}")
        if tuple(shape[3:]) != (h, w):
            raise KpdiffInputError(
                f"{name}: expected frames of size {h}×{w} as configured (input_size), got "
                f"{shape[3]}×{shape[4]}: {shape}"
            )

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """Backbone patch-token features of independent frames.

        Args:
            frames: ``[N, 3, H, W]`` (any N, e.g. B·T frames of B clips as one batch).

        Returns:
            ``[N, C_b, H/16, W/16]``: a ViT's last (normed) tokens, prefix and class tokens
            dropped, or a CNN's stride-16 feature map.
        """
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            if self.backbone_stage is None:
                x = self.backbone.forward_features(frames)
            else:  # [N, C_b, h, w], NCHW for every timm model
                indices = [self.backbone_stage]
                x = self.backbone.forward_intermediates(
                    frames, indices=indices, intermediates_only=True
                )[0]
        h, w = self.feature_size
        if x.dim() == 3:  # [N, prefix + h·w, C_b] tokens (ViT-style)
            x = x[:, getattr(self.backbone, "num_prefix_tokens", 0) :]
            return rearrange(x, "n (h w) c -> n c h w", h=h, w=w)
        nhwc = x.dim() == 4 and x.shape[-1] == self.backbone.num_features
        if self.backbone_stage is None and nhwc:  # NHWC token maps
            x = x.permute(0, 3, 1, 2)
        if tuple(x.shape[-2:]) != (h, w):
            raise KpdiffInputError(
                f"backbone: gave {tuple(x.shape[-2:])} features for {tuple(frames.shape[-2:])} "
                f"frames; kpdiff needs stride {PATCH_STRIDE}, i.e. {(h, w)}"
            )
        return x

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """Encode clips into the condition 𝔽.

        Args:
            clips: ``[B, T, 3, H, W]``, T = 2δ+1 frames, the key frame in the middle.

        Returns:
            𝔽 ``[B, C, H/16, W/16]``.
        """
        self.check_clips(clips)
        b, t = clips.shape[:2]
        h, w = self.feature_size
        feats = self.frame_features(clips.flatten(0, 1))  # one backbone batch of B·T frames
        tokens = rearrange(feats, "(b t) c h w -> b (t h w) c", b=b, t=t)
        x = self.patch_embed(tokens) + self.pos_embed  # z⁰ = E·x_p + E_pos, [B, T·h·w, C]
        for block in self.blocks:  # z^l = z' + MLP(LN(z')), z' = z^(l-1) + MSA(LN(z^(l-1)))
            use_ckpt = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
            x = checkpoint(block, x, use_reentrant=False) if use_ckpt else block(x)
        x = rearrange(self.norm(x), "b (t n) c -> b n (t c)", t=t)  # each location's T frames
        x = self.aggregate(x)  # 𝔽 = MLP(LN(z^L)) over frames, [B, h·w, C]
        return rearrange(x, "b (h w) c -> b c h w", h=h, w=w)


class Backbone(NamedTuple):
    """What :func:`build_backbone` returns."""

    module: nn.Module
    channels: int  # C_b, the width of the stride-16 features
    stage: int | None  # index into ``module.feature_info``; ``None``: a ViT, its last tokens


def build_backbone(
    name: str, input_size: tuple[int, int], kwargs: Mapping[str, Any] | None = None
) -> Backbone:
    """A timm backbone whose features have stride 16, with no pretrained weights.

    A ViT-style model (it accepts ``img_size`` and has a patch-16 grid) is built at
    ``input_size`` and used through its last tokens. Any other model (a CNN, Swin) is used
    through its first stage of stride 16 (``forward_intermediates``): the later stages and the
    head are removed (``prune_intermediate_layers``), and any parameter left that does not
    reach those features is frozen, so that every trainable parameter gets a gradient.

    Args:
        name: timm model name.
        input_size: ``(H, W)`` of the frames, multiples of 16.
        kwargs: extra ``timm.create_model`` arguments. Default ``None``.

    Raises:
        KpdiffInputError: unknown name, or no stage of stride 16 (e.g. a patch-8 ViT).
    """
    kwargs = dict(kwargs or {})
    grid = (input_size[0] // PATCH_STRIDE, input_size[1] // PATCH_STRIDE)
    try:
        try:
            model = timm.create_model(
                name, pretrained=False, num_classes=0, img_size=input_size, **kwargs
            )
        except TypeError as err:  # a CNN: its constructor takes no img_size
            if "img_size" not in str(err):
                raise
            model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    except RuntimeError as err:  # timm's "Unknown model"
        raise KpdiffInputError(f"backbone: {err}") from err
    except (TypeError, ValueError, AssertionError, ArithmeticError) as err:
        # timm checks (or divides by) the user's backbone_kwargs deep inside a constructor
        detail = " ".join(str(err).split())[:200] or type(err).__name__
        raise KpdiffInputError(
            f"backbone_kwargs: timm cannot build {name} with {kwargs} ({detail})"
        ) from None
    own = tuple(getattr(getattr(model, "patch_embed", None), "grid_size", ()))
    if own == grid:
        return Backbone(model, int(model.num_features), None)
    info = getattr(model, "feature_info", None)
    reductions = [int(f["reduction"]) for f in info] if isinstance(info, list) else []
    if PATCH_STRIDE not in reductions or not hasattr(model, "prune_intermediate_layers"):
        found = f"its stages have strides {reductions}" if reductions else "no stages"
        grid_note = f", and its tokens form a {own} grid, not {grid}" if own else ""
        raise KpdiffInputError(
            f"backbone: {name!r} has no features at stride {PATCH_STRIDE} that kpdiff can "
            f"reach ({found}{grid_note})"
        )
    stage = reductions.index(PATCH_STRIDE)
    model.prune_intermediate_layers([stage], prune_norm=True, prune_head=True)
    _probe(model, name, stage, input_size, grid)
    return Backbone(model, int(info[stage]["num_chs"]), stage)


def _probe(
    model: nn.Module, name: str, stage: int, input_size: tuple[int, int], grid: tuple[int, int]
) -> None:
    """Run one blank frame through a cut backbone, forward and backward.

    A bad input size fails here, named. Parameters that do not reach the stride-16 features
    (HRNet's fusions into its other branches) are frozen, so that they do not sit without
    gradients (which DistributedDataParallel refuses).
    """
    model.eval()
    try:
        x = model.forward_intermediates(
            torch.zeros(1, 3, *input_size), indices=[stage], intermediates_only=True
        )[0]
    except RuntimeError as err:  # e.g. HRNet's branches need sizes divisible by 32
        raise KpdiffInputError(
            f"backbone: {name!r} cannot run on {input_size[0]}×{input_size[1]} frames "
            f"(input_size): {err}"
        ) from err
    finally:
        model.train()
    if tuple(x.shape[-2:]) != grid:
        raise KpdiffInputError(
            f"backbone: {name!r} gives {tuple(x.shape[-2:])} features at stride "
            f"{PATCH_STRIDE} for {input_size} frames; kpdiff needs {grid}"
        )
    x.float().sum().backward()
    for p in model.parameters():
        if p.grad is None:
            p.requires_grad_(False)
        p.grad = None


# ------------------------------------------------------------------------ backbone weights

_HEAD_PREFIXES = ("head.", "fc_norm.", "decoder_", "mask_token", "keypoint_head.")


def load_backbone_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a local checkpoint and return the backbone's state dict in timm's key layout.

    Understands three layouts (``.pth``/``.pt``/``.bin`` via ``torch.load(weights_only=True)``,
    or ``.safetensors``):

    * timm: ``{"blocks.0.attn.qkv.weight": …}``;
    * MAE: ``{"model": {…timm keys…}}`` (``"state_dict"`` and DDP's ``module.`` also unwrapped);
    * ViTPose / mmpose: ``{"state_dict": {"backbone.…": …, "keypoint_head.…": …}}``: only the
      ``backbone.`` keys are kept, prefix stripped, ``last_norm`` renamed ``norm``.

    Raises:
        KpdiffInputError: the file is missing or is not a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise KpdiffInputError(f"backbone weights: no such file: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(path), device="cpu")
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, pickle with objects, …
        raise KpdiffInputError(f"backbone weights: cannot read {path}: {err}") from err
    for key in ("model", "state_dict", "module"):
        if isinstance(sd, Mapping) and isinstance(sd.get(key), Mapping):
            sd = sd[key]
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise KpdiffInputError(f"backbone weights: {path} does not hold a state dict of tensors")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    if any(k.startswith("backbone.") for k in sd):  # ViTPose / mmpose
        sd = {k.removeprefix("backbone."): v for k, v in sd.items() if k.startswith("backbone.")}
        sd = {("norm." + k[10:] if k.startswith("last_norm.") else k): v for k, v in sd.items()}
    return dict(sd)


def load_backbone_weights(backbone: nn.Module, path: str | Path, *, partial: bool = False) -> None:
    """Load a local checkpoint (see :func:`load_backbone_state_dict`) into a timm backbone.

    Classifier / MAE-decoder / pose-head keys the backbone does not have are ignored
    (``head.``, ``fc_norm.``, ``decoder_*``, ``mask_token``, ``keypoint_head.``). A position
    embedding of another grid (e.g. MAE's 14×14 at 224²) is resampled to the backbone's; one with
    a class-token slot for a backbone without class token (ViTPose) has that slot folded into
    every patch position, as ViTPose itself does at run time.

    Args:
        backbone: the timm module to load into.
        path: the checkpoint file.
        partial: the backbone was cut after a stage (as :func:`build_backbone` cuts CNNs):
            every key it has must be in the file, but the file's later stages and head are
            ignored. Default ``False``.

    Raises:
        KpdiffInputError: listing every missing, unexpected and wrongly shaped key.
    """
    sd = load_backbone_state_dict(path)
    own = backbone.state_dict()
    if partial:
        sd = {k: v for k, v in sd.items() if k in own}
    sd = {k: v for k, v in sd.items() if k in own or not k.startswith(_HEAD_PREFIXES)}
    if "pos_embed" in sd and "pos_embed" in own and sd["pos_embed"].shape != own["pos_embed"].shape:
        sd["pos_embed"] = _adapt_pos_embed(sd["pos_embed"], backbone)
    diff = state_dict_diff(own, sd)
    missing, unexpected = diff["missing"], diff["unexpected"]
    wrong = [f"{k}: file {list(sd[k].shape)} vs model {list(own[k].shape)}" for k in diff["shape"]]
    if missing or unexpected or wrong:
        hint = ""
        if "cls_token" in missing and "cls_token" not in sd:
            hint = (
                "\n(hint: ViTPose checkpoints have no class token: build the backbone with "
                "backbone_kwargs={'class_token': False, 'global_pool': 'avg', 'fc_norm': False})"
            )
        raise KpdiffInputError(
            f"backbone weights: {path} does not match the backbone "
            f"({type(backbone).__name__}):\n  missing keys: {_short(missing)}\n"
            f"  unexpected keys: {_short(unexpected)}\n  shape mismatches: {_short(wrong)}{hint}"
        )
    backbone.load_state_dict(sd, strict=True)


def _adapt_pos_embed(pos: torch.Tensor, backbone: nn.Module) -> torch.Tensor:
    """Resample a checkpoint's ``pos_embed [1, p + n, C]`` to the backbone's grid and prefix."""
    own = backbone.state_dict()["pos_embed"]
    grid = tuple(backbone.patch_embed.grid_size)
    own_prefix = own.shape[1] - grid[0] * grid[1]
    for prefix in dict.fromkeys((own_prefix, 1, 0)):  # try the backbone's own prefix first
        n = pos.shape[1] - prefix
        side = math.isqrt(max(n, 0))
        if n == grid[0] * grid[1]:
            old = grid
        elif side * side == n and n > 0:
            old = (side, side)
        else:
            continue
        if prefix < own_prefix:
            continue
        pre, body = pos[:, :prefix], pos[:, prefix:]
        body = resample_abs_pos_embed(body, list(grid), list(old), num_prefix_tokens=0)
        if prefix > own_prefix:  # ViTPose: the class slot is added to every patch position
            body = body + pre[:, own_prefix:prefix].sum(1, keepdim=True)
            pre = pre[:, :own_prefix]
        return torch.cat([pre, body], dim=1)
    return pos  # left as is: reported as a shape mismatch


def _short(items: list[str], limit: int = 12) -> str:
    if not items:
        return "none"
    more = f", … ({len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
