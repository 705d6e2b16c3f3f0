"""Building a dataset: :func:`build_synthetic_dataset`, its splits and the spawned workers."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from kpdiff.data.posetrack import write_posetrack18
from kpdiff.data.schemas import QUADRUPED, get_schema
from kpdiff.data.synthetic.config import GENERATOR_VERSION, SyntheticConfig, canonical
from kpdiff.data.synthetic.kinematics import Kinematics
from kpdiff.data.synthetic.render import render_video
from kpdiff.data.synthetic.rigs import HUMAN_RIG, QUADRUPED_RIG, get_rig
from kpdiff.errors import KpdiffInputError
from kpdiff.io import write_json_atomic
from kpdiff.progress import progress

MANIFEST = "synthetic.json"
_SPLIT_CODES = {"train": 1, "val": 2, "test": 3}


def build_synthetic_dataset(
    root: str | os.PathLike,
    config: SyntheticConfig | None = None,
    *,
    splits: Sequence[str] = ("train", "val"),
    workers: int | None = None,
    progress: bool | None = None,
) -> Path:
    """Render the synthetic dataset into ``root`` (PoseTrack18 layout, see the module doc).

    The build goes into a temporary folder next to ``root`` that is renamed into place when it
    is complete, so ``root`` never holds a half-written dataset. When ``root`` already holds a
    build with the same :meth:`SyntheticConfig.fingerprint`, nothing is done; a build with
    another fingerprint is replaced.

    Args:
        root: the dataset folder (created; its parent must be writable).
        config: what to draw. Default ``SyntheticConfig()`` (20 videos × 30 frames per split).
        splits: split names (identifiers). Video ``i`` of a split is ``0Ciiii_synthetic`` with
            ``C`` = 1 for train, 2 val, 3 test (4–9 for other names). Default
            ``("train", "val")``.
        workers: render videos in this many processes (the output is the same for any number).
            Default ``None``: the machine's CPU count.
        progress: a videos/s bar per split on stderr; ``None`` (default): when stderr is a
            terminal.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        KpdiffInputError: ``root`` exists and is neither empty nor a synthetic build; bad splits;
            a rig that does not fit its schema or has no ``FigureRig.head`` (the head
            boxes are the metric's reference size).
    """
    config = config or SyntheticConfig()
    root = Path(root)
    workers = (os.cpu_count() or 1) if workers is None else max(1, int(workers))
    splits = tuple(splits)
    if not splits or len(set(splits)) != len(splits) or not all(_valid_split(s) for s in splits):
        raise KpdiffInputError(f"splits: expected distinct names like 'train', 'val', got {splits}")
    codes = [_split_code(s) for s in splits]
    if len(set(codes)) != len(codes):
        raise KpdiffInputError(f"splits: {splits} map to the same video ids {codes}; rename one")
    schema = get_schema(config.schema)
    # The rig is checked first (a rig without FigureRig.head fails even where a build exists).
    kin = Kinematics.build(schema, config.rig or get_rig(schema))
    digest = config.fingerprint(splits)
    if _build_hash(root) == digest:
        return root
    if root.exists() and _build_hash(root) is None and (root.is_file() or any(root.iterdir())):
        raise KpdiffInputError(
            f"root: {root} exists and is not a kpdiff synthetic dataset; give a new or empty folder"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.building-", dir=root.parent))
    try:
        videos: dict[str, list[str]] = {}
        for split in splits:
            videos[split] = _build_split(tmp, split, config, kin, workers, progress)
        manifest = {
            "hash": digest,
            "generator_version": GENERATOR_VERSION,
            "splits": list(splits),
            "videos": videos,
            "config": canonical(config),
        }
        write_json_atomic(manifest, tmp / MANIFEST)
        _swap_into_place(tmp, root, digest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _valid_split(split: str) -> bool:
    return isinstance(split, str) and split.isidentifier()


def _split_code(split: str) -> int:
    """The split's leading video-id digit: 1 train, 2 val, 3 test, 4–9 other names (hashed)."""
    return _SPLIT_CODES.get(split, 4 + int(hashlib.sha256(split.encode()).hexdigest(), 16) % 6)


def _build_hash(root: Path) -> str | None:
    try:
        return json.loads((root / MANIFEST).read_text())["hash"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _swap_into_place(tmp: Path, root: Path, digest: str) -> None:
    """Rename the finished build ``tmp`` to ``root``, moving an older build out of the way."""
    old = None
    if root.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
        os.replace(root, old / "data")
    try:
        os.rename(tmp, root)
    except OSError:
        if _build_hash(root) != digest:  # somebody else's build, not ours: a real failure
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _build_split(
    out: Path,
    split: str,
    cfg: SyntheticConfig,
    kin: Kinematics,
    workers: int,
    bar: bool | None = None,
) -> list[str]:
    """Render every video of one split (``workers`` processes); returns the video names.

    Each video draws from its own stream, ``SeedSequence([seed, split code, index])``, so the
    output does not depend on ``workers`` and no two splits share a random draw.
    """
    code = _split_code(split)
    videos, frames = cfg.size_of(split)
    cfg = dataclasses.replace(cfg, num_videos=videos, frames_per_video=frames, split_sizes={})
    parallel = workers > 1 and videos * frames >= PARALLEL_MIN_FRAMES and _spawnable(cfg)
    if parallel:
        import multiprocessing

        # spawn, not fork: a forked child inherits the parent's OpenCV / OpenMP thread pools
        # mid-state and can hang. Spawned workers rebuild the built-in schema and rig by name
        # (schemas and rigs hold mapping proxies, which do not pickle).
        context = multiprocessing.get_context("spawn")
        with context.Pool(min(workers, videos), initializer=_start_worker,
                          initargs=(out, split, code, cfg)) as pool:  # fmt: skip
            chunk = max(1, videos // (8 * workers))
            built = pool.imap(_build_video, range(videos), chunksize=chunk)
            results = list(progress(built, total=videos, desc=split, unit="video", enabled=bar))
    else:
        global _SPLIT_JOB
        _SPLIT_JOB = (out, split, code, cfg, kin)
        try:
            built = (_build_video(i) for i in range(videos))
            results = list(progress(built, total=videos, desc=split, unit="video", enabled=bar))
        finally:
            _SPLIT_JOB = None
    detections = [box for _, dets in results for box in dets]
    write_json_atomic(detections, out / "detections" / f"{split}_boxes.json")
    return [name for name, _ in results]


_SPLIT_JOB: tuple[Path, str, int, SyntheticConfig, Kinematics] | None = None
"""``(out, split, code, config, kinematics)`` of the split being built (see ``_build_split``)."""

PARALLEL_MIN_FRAMES = 2000
"""Splits with fewer frames are rendered in-process (starting workers costs seconds)."""

_BUILTIN = {
    "posetrack": (get_schema("posetrack"), HUMAN_RIG),
    "quadruped": (QUADRUPED, QUADRUPED_RIG),
}


def _spawnable(cfg: SyntheticConfig) -> bool:
    """Whether a spawned worker can rebuild ``cfg``'s schema and rig by name: the built-in ones,
    not overridden. Other schemas and rigs are rendered in-process."""
    if cfg.rig is not None or not isinstance(cfg.schema, str):
        return False
    name = cfg.schema.lower()
    if name not in _BUILTIN:
        return False
    schema, rig = _BUILTIN[name]
    return get_schema(name) is schema and get_rig(schema) is rig


def _start_worker(out: Path, split: str, code: int, cfg: SyntheticConfig) -> None:
    """A spawned build worker: one OpenCV thread, and the split's job rebuilt from its name."""
    global _SPLIT_JOB
    cv2.setNumThreads(1)
    schema = get_schema(cfg.schema)
    _SPLIT_JOB = (out, split, code, cfg, Kinematics.build(schema, get_rig(schema)))


def _build_video(i: int) -> tuple[str, list[dict]]:
    """Render, write and annotate video ``i`` of the split being built; returns its name and
    detector boxes."""
    assert _SPLIT_JOB is not None
    out, split, code, cfg, kin = _SPLIT_JOB
    name = f"{code * 10000 + i:06d}_synthetic"
    scene_seed, det_seed = np.random.SeedSequence([cfg.seed, code, i]).spawn(2)
    video, dets = render_video(
        out, f"images/{split}/{name}", name, code * 10000 + i, cfg, kin,
        np.random.default_rng(scene_seed), np.random.default_rng(det_seed),
    )  # fmt: skip
    write_posetrack18(video, out / "annotations" / split / f"{name}.json", schema=kin.schema)
    return name, dets
