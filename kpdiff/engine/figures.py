"""Pictures of what DiffPose does inside, for one clip: the paper's Fig. 4 and Fig. 6.

:func:`inside_pictures` runs one N-hypothesis, ``steps``-step sampling of a DiffPose on one clip
and records, with forward hooks (the model is not changed):

- the lookup masks Aʲ = sigmoid(max_c x̄ʲ) of every scale j at every step (the paper's Fig. 4),
  for the first hypothesis;
- x̂₀ after every step (the max over joints of each step's heatmaps), first hypothesis;
- the N hypotheses' decoded skeletons and their mean's (Fig. 6).

It writes three PNG files: ``lookup_masks.png``, ``x0_steps.png`` and ``hypotheses.png``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from kpdiff.data.clips import IMAGENET_MEAN, IMAGENET_STD
from kpdiff.data.schemas import KeypointSchema
from kpdiff.diffpose import DiffPose
from kpdiff.drawing import draw_poses
from kpdiff.io import atomic_path
from kpdiff.sampling import repeat_cond

__all__ = ["inside_pictures"]


def _key_frame(clip: torch.Tensor) -> np.ndarray:
    """The key frame of ``clip [T, 3, H, W]`` (normalised) as RGB uint8 ``[H, W, 3]``."""
    frame = clip[clip.shape[0] // 2].permute(1, 2, 0).float().numpy()
    frame = frame * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)
    return (np.clip(frame, 0, 1) * 255).astype(np.uint8)


@torch.no_grad()
def inside_pictures(
    model: DiffPose,
    clip: torch.Tensor,
    schema: KeypointSchema,
    out_dir: str | Path,
    *,
    num_samples: int = 10,
    steps: int = 4,
    seed: int = 0,
) -> list[Path]:
    """Write the lookup masks, x̂₀ per step and the N hypotheses of one clip as PNG files.

    Args:
        model: a DiffPose (any lookup mode; without lookup no mask panel is drawn).
        clip: one clip ``[2δ+1, 3, H, W]``, as the clip datasets give it (normalised).
        schema: keypoint schema of the model's joints (its skeleton is drawn).
        out_dir: folder of the three files (created).
        num_samples: N. Default ``10``.
        steps: DDIM steps. Default ``4``.
        seed: seeds the noise. Default ``0``.

    Returns:
        The paths written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    masks: list[list[np.ndarray]] = []  # [scale][step] → [h, w] of hypothesis 0
    hooks = []
    for block in model.decoder.blocks:
        if not block.lookup:
            continue
        per_step: list[np.ndarray] = []
        masks.append(per_step)

        def record(_module, _inputs, xbar, per_step=per_step):  # x̄ʲ after Refine
            per_step.append(torch.sigmoid(xbar[0].float().amax(0)).cpu().numpy())

        hooks.append(block.refine.register_forward_hook(record))
    try:
        cond = model.condition(clip[None])
        g = torch.Generator().manual_seed(seed)
        k, (h, w) = model.config.num_keypoints, model.config.heatmap_size
        # The N hypotheses as one batch, as EnsembleSampler runs them (the clip's condition
        # repeated N times): row 0 of every decoder call is hypothesis 1, which the hooks record.
        x0, x0_steps = model.diffusion.sample(
            model.denoise, repeat_cond(cond, num_samples), (num_samples, k, h, w), steps=steps,
            generator=g, eta=model.sampler.eta, return_intermediates=True,
            renew=model.sampler.renew_x0 if model.sampler.renew else None,
        )  # fmt: skip
        result = model.sampler.aggregate_hypotheses(x0[:, None])  # [N, 1, K, h, w]
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)

    frame = _key_frame(clip)
    paths = []
    if masks:
        rows, cols = len(masks), len(masks[0])
        fig, axes = plt.subplots(rows, cols + 1, figsize=(1.6 * (cols + 1), 2.0 * rows), dpi=110,
                                 squeeze=False)  # fmt: skip
        t_list = model.diffusion.new_scheduler()
        t_list.set_timesteps(steps)
        for j, per_step in enumerate(masks):
            axes[j][0].imshow(frame)
            axes[j][0].set_ylabel(f"scale {j + 1}: {per_step[0].shape[0]}×{per_step[0].shape[1]}",
                                  fontsize=7)  # fmt: skip
            for s, mask in enumerate(per_step):
                axes[j][s + 1].imshow(mask, cmap="magma", vmin=0, vmax=1)
                if j == 0:
                    axes[j][s + 1].set_title(f"step {s + 1}, t = {int(t_list.timesteps[s])}",
                                             fontsize=7)  # fmt: skip
        for ax in np.ravel(axes):
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle("Lookup masks Aʲ = sigmoid(max_c x̄ʲ), hypothesis 1 (cf. the paper's Fig. 4)",
                     fontsize=8)  # fmt: skip
        fig.tight_layout()
        paths.append(_save(fig, out / "lookup_masks.png"))
        plt.close(fig)

    fig, axes = plt.subplots(1, len(x0_steps) + 1, figsize=(1.6 * (len(x0_steps) + 1), 2.2),
                             dpi=110)  # fmt: skip
    axes = np.atleast_1d(axes)
    axes[0].imshow(frame)
    axes[0].set_title("key frame", fontsize=7)
    for s, x0_s in enumerate(x0_steps):
        axes[s + 1].imshow(x0_s[0].amax(0).numpy(), cmap="magma", vmin=0, vmax=1)
        axes[s + 1].set_title(f"x̂₀ after step {s + 1}", fontsize=7)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    paths.append(_save(fig, out / "x0_steps.png"))
    plt.close(fig)

    bgr = np.ascontiguousarray(frame[..., ::-1])
    hyp_kp = result.hypothesis_keypoints[:, 0].numpy()  # [N, K, 2]
    ones = np.ones((*hyp_kp.shape[:2], 1))
    every = draw_poses(bgr, np.concatenate([hyp_kp, ones], -1), schema,
                       track_ids=list(range(len(hyp_kp))))  # fmt: skip
    mean_kp = np.concatenate([result.keypoints[0].numpy(), result.scores[0].numpy()[:, None]], -1)
    mean = draw_poses(bgr, mean_kp, schema, spread=result.spread[0].numpy(), min_score=0.0)
    fig, axes = plt.subplots(1, 2, figsize=(4.4, 3.0), dpi=110)
    for ax, image, title in ((axes[0], every, f"the N = {num_samples} hypotheses"),
                             (axes[1], mean, "their mean (circles: spread)")):  # fmt: skip
        ax.imshow(image[..., ::-1])
        ax.set_title(title, fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    paths.append(_save(fig, out / "hypotheses.png"))
    plt.close(fig)
    return paths


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
