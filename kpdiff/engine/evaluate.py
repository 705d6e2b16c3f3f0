"""Run a clip pose model over a clip dataset and score it with the PoseTrack AP.

The model is a DiffPose or any module that follows :class:`ClipPoseModel`. Its condition (for
DiffPose: the encoder and the decoder's pyramid) runs once per batch of clips, and every
``(N, steps)`` point of a sweep reuses it (``condition`` → ``predict(cond=…)``).
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from kpdiff.data.posetrack import write_posetrack18_predictions
from kpdiff.data.records import PersonPose, batch_poses
from kpdiff.data.schemas import KeypointSchema
from kpdiff.data.structures import FrameAnnotation, PersonAnnotation, VideoAnnotation
from kpdiff.engine.distributed import DistInfo, all_gather_objects
from kpdiff.metrics import PCKH_THRESHOLD, PoseTrackAP, head_size, posetrack_ap
from kpdiff.progress import progress as _progress

__all__ = ["ClipPoseModel", "SweepResult", "evaluate_model", "predictions_to_videos"]


@runtime_checkable
class ClipPoseModel(Protocol):
    """What :func:`evaluate_model` needs of a model: :class:`~kpdiff.DiffPose` is one.

    An ``nn.Module`` (``parameters``, ``train``, ``eval``, ``training``) with:

    - ``condition(clips [B, T, 3, H, W]) → cond``: everything that does not depend on the
      noise, computed once per batch (any object ``predict`` understands);
    - ``predict(*, cond, num_samples, steps, generator) → result`` where ``result`` has
      ``keypoints [B, K, 2]`` (crop pixels), ``scores [B, K]`` and ``spread [B, K]`` (crop
      pixels), like :class:`~kpdiff.EnsembleResult`.
    """

    training: bool

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]: ...

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...

    def condition(self, clips: torch.Tensor) -> Any: ...

    def predict(
        self, *, cond: Any, num_samples: int, steps: int, generator: torch.Generator | None
    ) -> Any: ...


@dataclass
class SweepResult:
    """AP for every ``(N, steps)`` point of an evaluation sweep.

    Attributes:
        ap: ``{(N, steps): PoseTrackAP}``.
        predictions: ``{(N, steps): list[VideoAnnotation]}`` in the ground truth's frame order.
        seconds: wall time of the whole sweep.
        clips: number of clips evaluated.
        spread_error: ``{(N, steps): (spread [M], error [M])}`` per visible GT joint (pixels),
            when ground truth keypoints were available; for uncertainty studies.
        pckh_threshold: ``{(N, steps): [M]}`` aligned with ``spread_error``: each joint's PCKh
            radius, 0.5 × headSize (0.6 × the GT head box diagonal, poseval's), in pixels;
            NaN where the person has no head box. ``error > threshold`` is "wrong at PCKh@0.5".
    """

    ap: dict[tuple[int, int], PoseTrackAP]
    predictions: dict[tuple[int, int], list[VideoAnnotation]]
    seconds: float
    clips: int
    spread_error: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    pckh_threshold: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)

    def table(self) -> str:
        """One row per sweep point: N, steps, then the paper's Table 1 columns."""
        first = next(iter(self.ap.values()))
        cols = list(first.columns)
        lines = [f"{'N':>3} {'steps':>5}  " + " ".join(f"{c:>8}" for c in cols)]
        for (n, s), ap in self.ap.items():
            vals = " ".join(_fmt(ap.columns[c]) for c in cols)
            lines.append(f"{n:>3} {s:>5}  {vals}")
        return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return f"{value:8.1f}" if value is not None and np.isfinite(value) else f"{'n/a':>8}"


@torch.no_grad()
def evaluate_model(
    model: ClipPoseModel,
    dataset: Dataset,
    gt_videos: Sequence[VideoAnnotation],
    *,
    sweep: Iterable[tuple[int, int]] = ((10, 4),),
    batch_size: int = 64,
    seed: int = 0,
    info: DistInfo | None = None,
    max_clips: int | None = None,
    schema: KeypointSchema | None = None,
    autocast_dtype: torch.dtype | None = None,
    progress: bool | None = False,
) -> SweepResult | None:
    """Predict every clip of ``dataset`` for each ``(N, steps)`` and compute the PoseTrack AP.

    Args:
        model: a :class:`ClipPoseModel`, e.g. a ``DiffPose`` (unwrapped from DDP), in eval
            mode or not (it is switched to eval, then back).
        dataset: a ``TopDownClipDataset`` without augmentation (GT or detector boxes).
        gt_videos: the ground truth the predictions are scored against.
        sweep: the ``(N, steps)`` points. Default ``((10, 4),)``.
        batch_size: clips per batch. Default ``64``.
        seed: seeds the sampling noise (same seed, same predictions). Every sweep point draws
            from its own generator, so a point's predictions do not depend on the other points
            of the sweep. Default ``0``.
        info: the process' place in a distributed run; each rank evaluates a shard and rank 0
            gathers. Default: single process.
        max_clips: evaluate only the first this many clips; the AP is then computed on the
            frames those clips cover (the frames before the first clip left out), not on the
            whole ground truth, which would count every frame left out as missed. Default: all.
        schema: keypoint schema of the predictions. Default: the dataset's.
        autocast_dtype: run the model under autocast with this dtype (GPU). Default none.
        progress: a clips/s bar on rank 0 (``None``: when stderr is a terminal). Default
            ``False`` (training's validation runs inside its own bar).

    Returns:
        The sweep's ``SweepResult`` on rank 0, ``None`` on the other ranks.
    """
    info = info or DistInfo()
    sweep = list(dict.fromkeys(sweep))
    schema = schema or dataset.schema
    indices = list(range(len(dataset)))[:max_clips]
    shard = Subset(dataset, indices[info.rank :: info.world_size])
    # A generator of its own: iterating must not consume the global RNG (training's draws).
    loader = DataLoader(
        shard, batch_size=batch_size, shuffle=False, num_workers=0, generator=torch.Generator()
    )
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    generators = {  # one per point: (10, 4) gives the same predictions alone or in a sweep
        key: torch.Generator(device=device).manual_seed(seed + 1000 * info.rank) for key in sweep
    }
    rows: dict[tuple[int, int], list[PersonPose]] = defaultdict(list)
    start = time.perf_counter()
    bar = _progress(
        loader, total=len(shard), desc="evaluate", unit="clip", scale=0,
        enabled=progress if info.is_main else False,
    )  # fmt: skip
    for batch in bar:
        clips = batch["clip"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            cond = model.condition(clips)  # once per clip, for the whole sweep
            for n, steps in sweep:
                result = model.predict(
                    cond=cond, num_samples=n, steps=steps, generator=generators[(n, steps)]
                )
                rows[(n, steps)].extend(batch_poses(batch, result))
    model.train(was_training)
    # Every rank joins every gather, also with an empty shard (fewer clips than ranks).
    gathered = {key: all_gather_objects(rows.get(key, []), info) for key in sweep}
    if not info.is_main:
        return None
    seconds = time.perf_counter() - start
    result = SweepResult(ap={}, predictions={}, seconds=seconds, clips=len(indices))
    scored = list(gt_videos)
    if len(indices) < len(dataset):  # max_clips: score the frames the evaluated clips cover
        scored = _covered(gt_videos, dataset, len(indices))
    for key in sweep:
        flat = [row for part in gathered[key] for row in part]
        videos = predictions_to_videos(flat, gt_videos)
        result.predictions[key] = videos
        result.ap[key] = posetrack_ap(scored, videos, schema=schema)
        if flat and flat[0].gt_keypoints is not None:
            result.spread_error[key] = _spread_error(flat)
            result.pckh_threshold[key] = _pckh_thresholds(flat, gt_videos)
    return result


def _covered(
    gt_videos: Sequence[VideoAnnotation], dataset: Dataset, first_left_out: int
) -> list[VideoAnnotation]:
    """The ground truth that the clips before ``first_left_out`` cover (clips are in video and
    frame order): the videos and frames before that clip's key frame, and on that frame the
    persons whose clips were evaluated (by track id; a dataset without ``samples``: none). Its
    video's later frames are kept without persons, so that the AP skips them (the prediction
    files still hold every frame)."""
    samples = getattr(dataset, "samples", None)
    done: set[int] = set()
    if samples is not None:  # a TopDownClipDataset: no need to read the clip's images
        s = samples[first_left_out]
        video, frame = s.video, s.key if s.frame_index is None else s.frame_index
        done = {
            e.track_id
            for e in samples[:first_left_out]
            if e.video == video and (e.key if e.frame_index is None else e.frame_index) == frame
        }
    else:
        item = dataset[first_left_out]
        video, frame = item["video"], int(item["frame_index"])
    names = [v.name for v in gt_videos]
    if video not in names:
        return list(gt_videos)
    cut = gt_videos[names.index(video)]

    def kept(f: FrameAnnotation) -> FrameAnnotation:
        if f.frame_index < frame:
            return f
        persons = [p for p in f.persons if p.track_id in done] if f.frame_index == frame else []
        return dataclasses.replace(f, persons=persons)

    frames = [kept(f) for f in cut.frames]
    return [*gt_videos[: names.index(video)], VideoAnnotation(name=cut.name, frames=frames)]


def _pckh_thresholds(rows: list[PersonPose], gt: Sequence[VideoAnnotation]) -> np.ndarray:
    """``PCKH_THRESHOLD`` × poseval's headSize of each row's person, repeated per visible
    joint (as in :func:`_spread_error`); the person is found by video, frame and track id."""
    heads: dict[tuple[str, int, int | None], float] = {}
    for video in gt:
        for frame in video.frames:
            for person in frame.persons:
                if person.head_box is not None:
                    size = head_size(person.head_box)
                    heads[(video.name, frame.frame_index, person.track_id)] = size
    out = []
    for row in rows:
        if row.gt_keypoints is None:
            continue
        size = heads.get((row.video, row.frame_index, row.gt_track_id), float("nan"))
        out.append(np.full(int((row.gt_keypoints[:, 2] > 0).sum()), PCKH_THRESHOLD * size))
    return np.concatenate(out) if out else np.zeros(0)


def _spread_error(rows: list[PersonPose]) -> tuple[np.ndarray, np.ndarray]:
    spreads, errors = [], []
    for row in rows:
        gt = row.gt_keypoints
        if gt is None:  # a batch without ground truth keypoints
            continue
        visible = gt[:, 2] > 0
        # in float32, the precision batch_poses maps both in (exact: the records widened them)
        diff = row.keypoints[visible].astype(np.float32) - gt[visible, :2].astype(np.float32)
        errors.append(np.linalg.norm(diff, axis=1))
        spreads.append(row.spread[visible])
    return np.concatenate(spreads), np.concatenate(errors)


def predictions_to_videos(
    rows: Sequence[PersonPose], gt_videos: Sequence[VideoAnnotation]
) -> list[VideoAnnotation]:
    """Arrange per-clip predictions as videos with exactly the ground truth's frames.

    Every GT frame is present (empty when nothing was predicted on it), with the GT's image
    path, image id and labelled flag, so the evaluation and the PoseTrack18 writer accept it.
    A record's ``track_id`` (a tracker's id, see :class:`~kpdiff.tracking.IoUTracker`) stays
    its person's; in frames with an untracked record (``None``) it is the position in the frame.
    """
    by_frame: dict[tuple[str | None, int | None], list[PersonPose]] = defaultdict(list)
    for row in rows:
        by_frame[(row.video, row.frame_index)].append(row)
    videos = []
    for video in gt_videos:
        frames = [
            FrameAnnotation(
                image_path=frame.image_path,
                frame_index=frame.frame_index,
                image_id=frame.image_id,
                is_labeled=frame.is_labeled,
                persons=frame_persons(by_frame.get((video.name, frame.frame_index), [])),
            )
            for frame in video.frames
        ]
        videos.append(VideoAnnotation(name=video.name, frames=frames))
    return videos


def frame_persons(records: Sequence[PersonPose]) -> list[PersonAnnotation]:
    """The records of one frame as annotations (what the writers and the AP take): a record's
    ``track_id`` stays its person's; in a frame with an untracked record (``None``) every
    person's is its position in the frame."""
    persons = [r.to_annotation() for r in records]
    if any(p.track_id is None for p in persons):
        for i, person in enumerate(persons):
            person.track_id = i
    return persons


def write_predictions(
    videos: Sequence[VideoAnnotation], folder: str | Path, schema: KeypointSchema
) -> list[Path]:
    """Write one PoseTrack18 prediction file per video into ``folder`` (atomically)."""
    folder = Path(folder)
    return [
        write_posetrack18_predictions(v, folder / f"{v.name}.json", schema=schema) for v in videos
    ]
