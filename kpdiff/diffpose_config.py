"""Every option of DiffPose in one frozen dataclass, its presets, and typed overrides of it.

:class:`DiffPoseConfig` is the model's whole description (its ``config.json``); it also says what
data the model wants (:meth:`~DiffPoseConfig.data_config`, :meth:`~DiffPoseConfig.codec`), so
the engine, the CLI, the pipeline and the benchmarks ask it instead of rebuilding clip settings.
:data:`PRESETS` names two of them; :class:`DiffPoseOverrides` is a typed partial config (the
``model.overrides`` section of an experiment). No torch here beyond what the codec imports.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from kpdiff.codecs import HEATMAP_STRIDE, GaussianHeatmapCodec, Refine
from kpdiff.data.clips import ClipConfig
from kpdiff.decoder import LookupMode
from kpdiff.errors import KpdiffInputError
from kpdiff.lookup import Fusion

__all__ = ["PRESETS", "DiffPoseConfig", "DiffPoseOverrides"]


@dataclass(frozen=True)
class DiffPoseConfig:
    """Every option of :class:`DiffPose`; defaults are the paper's model (``diffpose-b``).

    Args:
        num_keypoints: K. Default ``17`` (PoseTrack).
        backbone: timm model name: a ViT with patch 16 (its tokens), or any model with a
            stride-16 stage, e.g. ``"hrnet_w32"`` (see :func:`~kpdiff.build_backbone`).
            Default ``"vit_base_patch16_224"``.
        backbone_kwargs: extra ``timm.create_model`` arguments. Default ``{}``.
        input_size: ``(H, W)`` of the crops, multiples of 16; heatmaps are ``(H/4, W/4)``.
            Default ``(256, 192)``.
        delta: δ, frames each side of the key frame (T = 2δ+1). Default ``2``.
        dim: C, width of 𝔽. Default ``256``.
        encoder_depth: L, spatio-temporal Transformer layers. Default ``4``.
        encoder_heads: their heads. Default ``8``.
        mlp_ratio: their MLP ratio (and the frame MLP's). Default ``4.0``.
        freeze_backbone: no gradients into the backbone. Default ``False``.
        gradient_checkpointing: recompute encoder activations in backward. Default ``False``.
        decoder_dims: decoder widths at 𝔽 ×1/×2/×4. Default ``(128, 64, 32)``.
        decoder_depth: layers per refine / fuse mixer. Default ``1``.
        decoder_heads: heads of the 16×12 Transformer. Default ``4``.
        lookup: ``"full"``, ``"low_res"`` or ``"none"`` (Direct). Default ``"full"``.
        fusion: ``"sum"`` or ``"concat"`` of the scales. Default ``"sum"``.
        signal_scale: heatmaps live in ``[-scale, scale]`` during diffusion. Default ``2.0``.
        num_train_timesteps: T. Default ``1000``.
        sigma: Gaussian σ of the target heatmaps, heatmap pixels. Default ``2.0``.
        refine: sub-pixel decoding, ``"quarter"``, ``"dark"`` or ``"none"``. Default
            ``"quarter"``.
        num_samples: N, hypotheses averaged by :meth:`DiffPose.predict`. Default ``10``.
        steps: DDIM steps of :meth:`DiffPose.predict`. Default ``4``.
        eta: DDIM's η. Default ``0.0``.
        t_power: training timesteps t = ⌊T · u^(1/p)⌋: ``1`` is the paper's uniform t, ``> 1``
            trains more often at high noise (see :meth:`HeatmapDiffusion.loss`). Default ``1.0``.
        self_align: share of training samples whose x_t comes from the model's own first x̂₀
            (self-aligned denoising; see :meth:`HeatmapDiffusion.loss`). Default ``0.0``.
        renew: between sampling steps, re-render clean Gaussians at the decoded peaks of x̂₀
            (see :class:`~kpdiff.EnsembleSampler`). Default ``False``.
        schema: name of the keypoint schema whose joints the model predicts, in its order
            (:func:`~kpdiff.data.get_schema`); training sets it from ``data.schema``, so a
            prediction or evaluation with another schema is refused instead of relabelling
            the joints. ``None``: not recorded (older checkpoints). Default ``None``.
    """

    num_keypoints: int = 17
    backbone: str = "vit_base_patch16_224"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    input_size: tuple[int, int] = (256, 192)
    delta: int = 2
    dim: int = 256
    encoder_depth: int = 4
    encoder_heads: int = 8
    mlp_ratio: float = 4.0
    freeze_backbone: bool = False
    gradient_checkpointing: bool = False
    decoder_dims: tuple[int, int, int] = (128, 64, 32)
    decoder_depth: int = 1
    decoder_heads: int = 4
    lookup: LookupMode = "full"
    fusion: Fusion = "sum"
    signal_scale: float = 2.0
    num_train_timesteps: int = 1000
    sigma: float = 2.0
    refine: Refine = "quarter"
    num_samples: int = 10
    steps: int = 4
    eta: float = 0.0
    t_power: float = 1.0
    self_align: float = 0.0
    renew: bool = False
    schema: str | None = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # types first: a "64" for dim fails here, not in torch
            object.__setattr__(self, f.name, _check_option(f.name, getattr(self, f.name)))
        # Upper bounds too: a damaged config.json must not make DiffPose allocate without end
        # (T = 2**64 betas, 2**64 layers) before its weights are compared with the file's.
        for name in _SIZES:
            value = getattr(self, name)
            high = _MAX_TIMESTEPS if name == "num_train_timesteps" else _MAX_SIZE
            if any(not 1 <= v <= high for v in (value if isinstance(value, tuple) else (value,))):
                raise KpdiffInputError(f"{name}: expected sizes in [1, {high}], got {value!r}")
        for name in ("delta", "encoder_depth", "decoder_depth"):
            if not 0 <= getattr(self, name) <= _MAX_SIZE:
                raise KpdiffInputError(
                    f"{name}: expected an integer in [0, {_MAX_SIZE}], got {getattr(self, name)!r}"
                )
        if self.eta < 0:
            raise KpdiffInputError(f"eta: expected >= 0, got {self.eta!r}")
        for name in ("mlp_ratio", "signal_scale", "sigma"):
            if not getattr(self, name) > 0:
                raise KpdiffInputError(f"{name}: expected > 0, got {getattr(self, name)!r}")
        if self.num_keypoints < 1:
            raise KpdiffInputError(f"num_keypoints: expected >= 1, got {self.num_keypoints}")
        if not self.t_power > 0 or not 0 <= self.self_align <= 1:
            raise KpdiffInputError(
                f"t_power: expected > 0, got {self.t_power}; self_align: expected in [0, 1], "
                f"got {self.self_align}"
            )

    @property
    def heatmap_size(self) -> tuple[int, int]:
        """``(H, W)`` of the heatmaps: the input size over :data:`~kpdiff.codecs.HEATMAP_STRIDE`."""
        return self.input_size[0] // HEATMAP_STRIDE, self.input_size[1] // HEATMAP_STRIDE

    def codec(self) -> GaussianHeatmapCodec:
        """The heatmap codec of this model: :attr:`heatmap_size`, stride
        :data:`~kpdiff.codecs.HEATMAP_STRIDE`, ``sigma`` and ``refine``."""
        return GaussianHeatmapCodec(
            self.heatmap_size, stride=HEATMAP_STRIDE, sigma=self.sigma, refine=self.refine
        )

    def data_config(self, **overrides: Any) -> ClipConfig:
        """The clips this model takes: ``ClipConfig(delta, input_size)`` of this config, with
        ``overrides`` for the other fields (``edge``, ``min_box_score``, ``padding``, …).
        Everyone who cuts clips for a model asks it here (engine, CLI, pipeline, benchmarks)."""
        return ClipConfig(delta=self.delta, input_size=tuple(self.input_size), **overrides)

    def check_schema(self, schema: Any, argument: str = "schema") -> None:
        """Refuse a keypoint schema that would relabel the model's joints.

        Args:
            schema: a :class:`~kpdiff.data.KeypointSchema` (its ``name`` and
                ``num_keypoints`` are compared with :attr:`schema` and :attr:`num_keypoints`).
            argument: the name of the user's argument, for the message. Default ``"schema"``.

        Raises:
            KpdiffInputError: when the joint count differs, or the model records another
                schema (a model without a recorded schema accepts any of its joint count).
        """
        if schema.num_keypoints != self.num_keypoints:
            raise KpdiffInputError(
                f"{argument}: {schema.name} has {schema.num_keypoints} joints, the model "
                f"{self.num_keypoints}"
            )
        if self.schema is not None and schema.name.lower() != self.schema.lower():
            raise KpdiffInputError(
                f"{argument}: the model predicts {self.schema} joints; {schema.name} would "
                f"relabel them (same count, other joints); use {argument} {self.schema}"
            )

    def replace(self, **overrides: Any) -> DiffPoseConfig:
        """A copy with some fields changed; unknown names raise :class:`KpdiffInputError`."""
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise KpdiffInputError(f"DiffPoseConfig: unknown options {unknown}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiffPoseConfig:
        """Inverse of :meth:`to_dict`; unknown keys, values of the wrong type and a ``data``
        that is not a dict raise :class:`KpdiffInputError`."""
        if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
            raise KpdiffInputError(
                f"DiffPoseConfig: expected a mapping of option names to values, got "
                f"{type(data).__name__}"
            )
        return cls().replace(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DiffPoseConfig:
        return cls.from_dict(json.loads(text))


_MAX_SIZE, _MAX_TIMESTEPS = 2**14, 10**5  # bounds of any size / depth, and of T
_SIZES = ("num_keypoints", "input_size", "dim", "encoder_heads", "decoder_dims", "decoder_heads",
          "num_train_timesteps", "num_samples", "steps")  # fmt: skip


def _check_option(name: str, value: Any) -> Any:
    """``value`` checked against the type of ``DiffPoseConfig.<name>``, normalised (tuples for
    lists, floats for ints); a wrong type raises :class:`KpdiffInputError` naming the option."""
    tp = _option_types()[name]
    origin, args = typing.get_origin(tp), typing.get_args(tp)

    def integer(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if origin in (typing.Union, types.UnionType) and type(None) in args:  # X | None
        if value is None:
            return value
        (tp,) = (a for a in args if a is not type(None))
        origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:  # one of a few strings
        ok = isinstance(value, str) and value in args
        if not ok:
            choices = ", ".join(repr(a) for a in args)
            raise KpdiffInputError(f"{name}: expected one of {choices}, got {value!r:.80}")
    elif tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = integer(value)
    elif tp is float:
        ok = (integer(value) or isinstance(value, float)) and math.isfinite(value)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    elif origin is dict:
        ok = isinstance(value, dict) and all(isinstance(k, str) for k in value)
        value = dict(value) if ok else value
    else:  # tuple[int, ...] of a fixed length
        ok = isinstance(value, list | tuple) and len(value) == len(args)
        ok = ok and all(integer(v) for v in value)
        value = tuple(value) if ok else value
    if not ok:
        want = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}
        expected = want.get(tp) or ("a mapping" if origin is dict else f"{len(args)} integers")
        raise KpdiffInputError(f"{name}: expected {expected}, got {value!r:.80}")
    return value


_OPTION_TYPES: dict[str, Any] = {}


def _option_types() -> dict[str, Any]:
    if not _OPTION_TYPES:
        _OPTION_TYPES.update(typing.get_type_hints(DiffPoseConfig))
    return _OPTION_TYPES


PRESETS: dict[str, DiffPoseConfig] = {
    # The paper: ViT-B/16 at 256×192, δ = 2, T = 1000, N = 10, 4 steps.
    "diffpose-b": DiffPoseConfig(),
    # A CPU model for tests and demos: 128×96 crops → 32×24 heatmaps, a 2-layer ViT of width 96.
    "diffpose-tiny": DiffPoseConfig(
        backbone="vit_tiny_patch16_224",
        backbone_kwargs={"depth": 2, "embed_dim": 96, "num_heads": 3},
        input_size=(128, 96),
        delta=1,
        dim=64,
        encoder_depth=1,
        encoder_heads=4,
        mlp_ratio=2.0,
        decoder_dims=(64, 32, 16),
        decoder_heads=4,
    ),
}


class DiffPoseOverrides:
    """A typed partial :class:`DiffPoseConfig`: the options to change from a preset.

    It has one field per :class:`DiffPoseConfig` option, of that option's type or ``None``
    (``None``: keep the preset's value), and checks each value given as the config would, so an
    experiment file's ``model.overrides: {delta: 0}`` is checked when it is read::

        DiffPoseOverrides(delta=0, t_power=3.0).apply(PRESETS["diffpose-tiny"])

    The fields are made from :class:`DiffPoseConfig`'s (one list of options, not two).
    """

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.changes().items())
        return f"DiffPoseOverrides({options})"

    def __post_init__(self) -> None:
        for name, value in self.changes().items():
            object.__setattr__(self, name, _check_option(name, value))

    def changes(self) -> dict[str, Any]:
        """The options set (not ``None``), by name."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if getattr(self, f.name) is not None
        }

    def apply(self, config: DiffPoseConfig) -> DiffPoseConfig:
        """``config`` with these options changed."""
        return config.replace(**self.changes())

    @classmethod
    def coerce(cls, value: DiffPoseOverrides | dict[str, Any] | None) -> DiffPoseOverrides:
        """``value`` as overrides: a mapping of option names (unknown names raise
        :class:`KpdiffInputError` listing the options), ``None`` (none) or overrides."""
        if value is None or isinstance(value, cls):
            return value or cls()
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise KpdiffInputError(
                f"expected a mapping of DiffPoseConfig options, got {type(value).__name__}"
            )
        unknown = sorted(set(value) - set(_option_types()))
        if unknown:
            raise KpdiffInputError(
                f"unknown DiffPoseConfig option(s) {', '.join(unknown)}; expected some of "
                f"{', '.join(sorted(_option_types()))}"
            )
        return cls(**value)


# The fields: every DiffPoseConfig option as ``<its type> | None = None``.
DiffPoseOverrides.__annotations__ = {
    name: typing.Optional[tp]  # noqa: UP045 (tp is a type object here, not a string)
    for name, tp in typing.get_type_hints(DiffPoseConfig).items()
}
for _name in DiffPoseOverrides.__annotations__:
    setattr(DiffPoseOverrides, _name, None)
DiffPoseOverrides = dataclass(frozen=True, repr=False)(DiffPoseOverrides)  # type: ignore[misc]
