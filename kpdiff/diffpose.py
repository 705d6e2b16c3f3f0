"""DiffPose (Feng et al., ICCV 2023): the public pieces of kpdiff assembled into one model.

    clips [B, 2δ+1, 3, H, W] ──SpatioTemporalEncoder──► 𝔽 ──PoseDecoder.prepare──► pyramid (cond)
    x_T ~ N(0, I) ──N hypotheses × `steps` DDIM steps of PoseDecoder(x_t, t, cond)──► x̂₀
    mean over hypotheses ──GaussianHeatmapCodec.decode──► keypoints [B, K, 2] (crop pixels)

Every option lives in :class:`DiffPoseConfig` (``diffpose_config.py``, JSON round trip); the
paper's ablations are config switches: ``lookup="none"`` (Direct), ``"low_res"``, ``delta=0``
(single frame), ``fusion``.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from kpdiff.codecs import SignalRange
from kpdiff.data.clips import ClipConfig
from kpdiff.decoder import DecoderCondition, PoseDecoder
from kpdiff.diffpose_config import PRESETS, DiffPoseConfig
from kpdiff.diffusion import HeatmapDiffusion, default_scheduler
from kpdiff.encoder import SpatioTemporalEncoder
from kpdiff.errors import (
    CLIP_MAX_ABS,
    KpdiffInputError,
    check_dtype,
    check_finite,
    check_shape,
)
from kpdiff.hub import CONFIG_NAME, WEIGHTS_NAME
from kpdiff.io import atomic_path, load_safetensors, state_dict_diff, write_text_atomic
from kpdiff.sampling import EnsembleResult, EnsembleSampler

if typing.TYPE_CHECKING:
    from kpdiff.hub import ModelCard

__all__ = ["DiffPose", "PretrainedMixin", "build_encoder"]

_M = TypeVar("_M", bound="PretrainedMixin")


def build_encoder(config: DiffPoseConfig) -> SpatioTemporalEncoder:
    """The :class:`~kpdiff.SpatioTemporalEncoder` that ``config``'s encoder options describe."""
    c = config
    return SpatioTemporalEncoder(
        backbone=c.backbone, backbone_kwargs=c.backbone_kwargs, input_size=c.input_size,
        delta=c.delta, dim=c.dim, depth=c.encoder_depth, heads=c.encoder_heads,
        mlp_ratio=c.mlp_ratio, freeze_backbone=c.freeze_backbone,
        gradient_checkpointing=c.gradient_checkpointing,
    )  # fmt: skip


class PretrainedMixin(nn.Module):
    """``save_pretrained`` / ``from_pretrained`` for a module built as ``cls(config)`` from a
    :class:`DiffPoseConfig` held in ``self.config`` (:class:`DiffPose`, :class:`HeatmapRegressor`).
    """

    config: DiffPoseConfig

    def data_config(self, **overrides: Any) -> ClipConfig:
        """The clips this model takes (:meth:`DiffPoseConfig.data_config`)."""
        return self.config.data_config(**overrides)

    def save_pretrained(
        self,
        directory: str | Path,
        *,
        push_to_hub: bool = False,
        repo_id: str | None = None,
        private: bool | None = None,
        model_card: ModelCard | str | None = None,
        token: str | bool | None = None,
    ) -> str | None:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (atomically);
        with a ``model_card`` or ``push_to_hub``, also a ``README.md`` model card.

        Args:
            directory: the folder (created when missing).
            push_to_hub: then upload the folder's three files to the Hub repository
                ``repo_id`` (created when missing) in one commit. Default ``False``.
            repo_id: ``"org/name"``; needed with ``push_to_hub``. Default ``None``.
            private: visibility of a repository created now (``None``: the Hub's default).
            model_card: a :class:`~kpdiff.hub.ModelCard` (training data, measured AP; e.g.
                ``ModelCard.from_run("runs/x")``) rendered with the model's config, or the
                card's full text. Default ``None``: no card for a local save, a card saying
                "not measured" for a push.
            token: Hub token (``None``: the one of ``hf auth login``).

        Returns:
            The commit's URL when pushed, else ``None``.
        """
        from safetensors.torch import save_file

        from kpdiff.hub import CARD_NAME, ModelCard, is_repo_id, push_folder, render_model_card

        if push_to_hub and not (isinstance(repo_id, str) and is_repo_id(repo_id)):
            raise KpdiffInputError(
                f"repo_id: expected a Hub id 'org/name' with push_to_hub=True, got {repo_id!r}"
            )
        if model_card is not None and not isinstance(model_card, ModelCard | str):
            raise KpdiffInputError(
                f"model_card: expected a kpdiff.hub.ModelCard or the card's text, got "
                f"{type(model_card).__name__}"
            )
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(directory / WEIGHTS_NAME) as tmp:
            save_file(tensors, str(tmp))
        write_text_atomic(directory / CONFIG_NAME, self.config.to_json())
        if model_card is not None or push_to_hub:
            text = model_card if isinstance(model_card, str) else render_model_card(
                self.config, model_card, model_class=type(self).__name__, repo_id=repo_id
            )  # fmt: skip
            write_text_atomic(directory / CARD_NAME, text)
        if not push_to_hub:
            return None
        return push_folder(directory, repo_id, private=private, token=token)

    @classmethod
    def from_pretrained(
        cls: type[_M],
        directory: str | Path,
        *,
        map_location: str | torch.device = "cpu",
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
    ) -> _M:
        """Load what :meth:`save_pretrained` wrote, from a folder or a Hub id.

        Args:
            directory: a folder, or a Hub id ``"org/name"`` (a string that is not an existing
                path), downloaded with ``huggingface_hub`` into its cache (see
                :func:`kpdiff.hub.resolve_pretrained`).
            map_location: where the weights go. Default ``"cpu"``.
            revision: branch, tag or commit of a Hub id. Default ``None`` (``main``).
            cache_dir: the Hub cache. Default ``None``: ``HF_HUB_CACHE``.
            local_files_only: read only the Hub cache (as ``HF_HUB_OFFLINE=1``). Default
                ``False``.
            token: Hub token for private or gated repositories. Default ``None``.

        Raises:
            KpdiffInputError: missing files, a config that does not match the weights, or a
                Hub id that cannot be resolved (e.g. offline and not in the cache).
        """
        from kpdiff.hub import resolve_pretrained

        directory = resolve_pretrained(
            directory, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
            token=token,
        )  # fmt: skip
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (directory / name).is_file():
                raise KpdiffInputError(f"from_pretrained: {directory / name} does not exist")
        file = directory / CONFIG_NAME
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise KpdiffInputError(
                f"from_pretrained: {file}: not UTF-8 text; expected the JSON object that "
                f"save_pretrained writes"
            ) from None
        except (ValueError, RecursionError) as err:
            detail = " ".join(str(err).split())[:200]
            raise KpdiffInputError(f"from_pretrained: {file}: not valid JSON ({detail})") from None
        if not isinstance(data, dict):
            raise KpdiffInputError(
                f"from_pretrained: {file}: expected a JSON object of DiffPoseConfig options, got "
                f"a {type(data).__name__}"
            )
        try:
            config = DiffPoseConfig.from_dict(data)
            model = cls(config)
        except (
            KpdiffInputError,
            TypeError,
            ValueError,
            RuntimeError,
            AssertionError,
            ArithmeticError,
        ) as err:
            detail = " ".join(str(err).split())[:300]
            raise KpdiffInputError(f"from_pretrained: {file}: {detail}") from None
        state = load_safetensors(directory / WEIGHTS_NAME, device=str(map_location), finite=True)
        own = model.state_dict()
        problems = state_dict_diff(own, state)
        problems["shape"] = [
            f"{k}: file {list(state[k].shape)}, config {list(own[k].shape)}"
            for k in problems["shape"]
        ]
        if any(problems.values()):
            detail = "; ".join(f"{n} ({len(v)}): {v[:6]}" for n, v in problems.items() if v)
            raise KpdiffInputError(
                f"from_pretrained: {WEIGHTS_NAME} does not match {CONFIG_NAME} in {directory}: "
                f"{detail}"
            )
        model.load_state_dict(state)
        return model.to(map_location)


class DiffPose(PretrainedMixin):
    """SpatioTemporal diffusion model for video pose estimation.

    ``DiffPose(num_keypoints=17, delta=2, …)``, ``DiffPose(config)``, ``DiffPose(config, delta=0)``
    or ``DiffPose.from_preset("diffpose-tiny", lookup="none")``.
    """

    def __init__(self, config: DiffPoseConfig | None = None, /, **overrides: Any) -> None:
        super().__init__()
        c = self.config = (config or DiffPoseConfig()).replace(**overrides)
        self.encoder = build_encoder(c)
        self.decoder = PoseDecoder(
            num_keypoints=c.num_keypoints, feat_dim=c.dim, dims=c.decoder_dims, lookup=c.lookup,
            fusion=c.fusion, depth=c.decoder_depth, heads=c.decoder_heads,
            background=-c.signal_scale,
        )  # fmt: skip
        self.codec = c.codec()
        self.diffusion = HeatmapDiffusion(
            default_scheduler(c.num_train_timesteps, c.signal_scale),
            signal=SignalRange(c.signal_scale),
        )
        self.sampler = EnsembleSampler(
            self.diffusion, self.codec, num_samples=c.num_samples, steps=c.steps, eta=c.eta,
            renew=c.renew,
        )  # fmt: skip

    @classmethod
    def from_preset(cls, name: str, /, **overrides: Any) -> DiffPose:
        """A model from :data:`PRESETS` (``"diffpose-b"``, ``"diffpose-tiny"``), with overrides."""
        if name not in PRESETS:
            raise KpdiffInputError(f"preset: expected one of {sorted(PRESETS)}, got {name!r}")
        return cls(PRESETS[name], **overrides)

    def condition(self, clips: torch.Tensor) -> DecoderCondition:
        """The step-invariant condition, once per clip: ``clips [B, 2δ+1, 3, H, W]`` → the
        :class:`~kpdiff.decoder.DecoderCondition` that :meth:`PoseDecoder.prepare` makes of
        𝔽 = encoder(clips): ``pyramid`` 𝔽ʲ (𝔽 up-sampled ×1/×2/×4, ``[B, C_j, h_j, w_j]``) and
        ``terms`` Tʲ (each scale's own share of the fusion). Reuse it across N and ``steps``.

        ``clips`` are checked as in :meth:`predict` (shape, B ≥ 1, normalised float images,
        finite, ``|x| <= 1e4``; float64 / float16 / bfloat16 are cast to the model's dtype).
        """
        return self.decoder.prepare(self.encoder(self._check_clips(clips)))

    def _check_clips(self, clips: torch.Tensor) -> torch.Tensor:
        """``clips`` checked and cast to the model's dtype; raises :class:`KpdiffInputError`."""
        self.encoder.check_clips(clips)
        if clips.shape[0] < 1:
            raise KpdiffInputError(f"clips: expected B >= 1 clips, got {list(clips.shape)}")
        check_dtype("clips", clips, hint=" of normalised images (e.g. uint8 / 255, then mean/std)")
        param = next(self.parameters())
        if clips.device != param.device:
            raise KpdiffInputError(
                f"clips: expected a tensor on the model's device {param.device}, got {clips.device}"
            )
        check_finite("clips", clips, max_abs=CLIP_MAX_ABS)
        return clips.to(param.dtype)

    def denoise(
        self, x_t: torch.Tensor, t: torch.Tensor, cond: tuple[torch.Tensor, ...]
    ) -> torch.Tensor:
        """The :class:`~kpdiff.Denoiser`: ``x_t [B, K, H/4, W/4]``, ``t [B]`` → x̂₀ (signal)."""
        return self.decoder(x_t, t, cond)

    def loss(
        self,
        clips: torch.Tensor,
        heatmaps: torch.Tensor,
        weights: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """x₀-prediction loss: ``clips [B, T, 3, H, W]``, target ``heatmaps [B, K, H/4, W/4]``
        in ``[0, 1]`` (key frame), ``weights [B, K]`` (default ones, finite, ≥ 0) → scalar.

        ``clips`` as in :meth:`predict`; bad input raises :class:`KpdiffInputError` naming it
        (see :meth:`HeatmapDiffusion.loss` for ``heatmaps`` and ``weights``).
        """
        clips = self._check_clips(clips)
        self._check_heatmaps(heatmaps, clips.shape[0])
        # The condition comes from checked clips: not re-checked (an fp16 overflow in the
        # encoder is the training loop's to handle, see HeatmapDiffusion.loss's check_cond).
        cond = self.decoder.prepare(self.encoder(clips))
        return self.diffusion.loss(
            self.denoise, heatmaps, cond, weights, generator=generator,
            t_power=self.config.t_power, self_align=self.config.self_align, check_cond=False,
        )  # fmt: skip

    @torch.no_grad()
    def predict(
        self,
        clips: torch.Tensor | None = None,
        *,
        num_samples: int | None = None,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        cond: tuple[torch.Tensor, ...] | None = None,
        keep_hypotheses: bool = False,
    ) -> EnsembleResult:
        """Keypoints of the key frames: ``keypoints [B, K, 2]`` (crop pixels), ``scores``,
        ``spread [B, K]``, ``heatmaps [B, K, H/4, W/4]``. N and ``steps`` default to the
        config's (10, 4); pass ``cond`` (from :meth:`condition`) to skip the encoder.

        Args:
            clips: ``[B, 2δ+1, 3, H, W]`` normalised float images (B ≥ 1, finite,
                ``|x| <= 1e4``: larger values overflow the encoder's normalisation) on the
                model's device. float64, float16 and bfloat16 clips are cast to the model's
                dtype; uint8, bool and integer clips are refused (normalise them first: the
                model expects float images, e.g. ``uint8 / 255`` then mean/std).
            num_samples: N ≥ 1. Default: the config's.
            steps: DDIM steps ≥ 1. Default: the config's.
            generator: a ``torch.Generator``. Default: the global RNG.
            cond: the :class:`~kpdiff.decoder.DecoderCondition` from :meth:`condition` (or
                its flat tuple, ``cond.tensors()``; finite float tensors with the shapes
                ``condition`` gives). With both ``clips`` and ``cond``, ``cond`` is used and
                must be for the same B clips (its batch size must equal ``clips``').
            keep_hypotheses: also return the N heatmaps. Default ``False``.

        Raises:
            KpdiffInputError: bad ``clips`` / ``cond`` / options, naming the argument.
        """
        if cond is None:
            if clips is None:
                raise KpdiffInputError("predict: expected clips or cond, got neither")
            cond = self.condition(clips)
            batch = cond.batch_size
        else:
            batch = self._check_cond(cond)
            if clips is not None:
                self.encoder.check_clips(clips)
                if clips.shape[0] != batch:
                    raise KpdiffInputError(
                        f"cond: batch size {batch} does not match clips' "
                        f"{clips.shape[0]}; cond is used when both are given, so they must "
                        f"be for the same clips (or pass only one)"
                    )
        shape = (batch, self.config.num_keypoints, *self.config.heatmap_size)
        return self.sampler(
            self.denoise, cond, shape, num_samples=num_samples, steps=steps,
            generator=generator, keep_hypotheses=keep_hypotheses,
        )  # fmt: skip

    def _check_cond(self, cond: Any) -> int:
        """Raise unless ``cond`` has the form :meth:`condition` returns (or its flat tuple) for
        some B ≥ 1, on the model's device and finite; returns B."""
        n = len(self.decoder.blocks)
        if isinstance(cond, DecoderCondition):
            named = [(f"cond.pyramid[{j}]", c) for j, c in enumerate(cond.pyramid)]
            named += [(f"cond.terms[{j}]", c) for j, c in enumerate(cond.terms)]
        elif isinstance(cond, (tuple, list)):
            named = [(f"cond[{i}]", c) for i, c in enumerate(cond)]
        else:
            named = []
        if len(named) != 2 * n or not all(isinstance(c, torch.Tensor) for _, c in named):
            found = type(cond).__name__ + (f" of {len(named)} tensors" if named else "")
            raise KpdiffInputError(
                f"cond: expected the DecoderCondition from DiffPose.condition ({n} + {n} "
                f"tensors), got {found}"
            )
        h, w = self.encoder.feature_size
        dims = self.config.decoder_dims
        sizes: dict[str, int] = {}
        for i, (name, c) in enumerate(named):
            f = self.decoder.factors[i % n]
            check_shape(name, c, ("B", dims[f.bit_length() - 1], h * f, w * f), sizes)
            check_dtype(name, c)
        if sizes["B"] < 1:
            raise KpdiffInputError(f"cond: expected B >= 1, got {list(named[0][1].shape)}")
        param = next(self.parameters())
        for name, c in named:
            if c.device != param.device:
                raise KpdiffInputError(
                    f"{name}: expected a tensor on the model's device {param.device}, got "
                    f"{c.device}"
                )
            check_finite(name, c)
        return sizes["B"]

    def _check_heatmaps(self, heatmaps: torch.Tensor, batch: int) -> None:
        check_shape(
            "heatmaps", heatmaps, (batch, self.config.num_keypoints, *self.config.heatmap_size)
        )
