"""Keypoint schemas: which points a body has, how they mirror, connect and are evaluated.

A :class:`KeypointSchema` is plain data. kpdiff ships :data:`POSETRACK` (the 17 points of
PoseTrack18/21 and of DiffPose), :data:`COCO` and :data:`QUADRUPED` (13 points of a four-legged
animal, which the synthetic dataset draws); any other body (a hand, a simpler quadruped, a
robot arm) is one constructor call away, and :func:`register_schema` makes it reachable by name::

    DOG = KeypointSchema(
        name="dog",
        keypoints=("nose", "withers", "tail_base", "lf_paw", "rf_paw", "lh_paw", "rh_paw"),
        flip_pairs=((3, 4), (5, 6)),
        skeleton=((0, 1), (1, 2), (1, 3), (1, 4), (2, 5), (2, 6)),
        eval_groups={"Head": (0,), "Front": (3, 4), "Hind": (5, 6)},
    )
    register_schema(DOG)
    get_schema("dog") is DOG  # True

Indices are 0-based positions in ``keypoints``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from kpdiff.errors import KpdiffInputError

__all__ = ["COCO", "POSETRACK", "QUADRUPED", "KeypointSchema", "get_schema", "register_schema"]


@dataclass(frozen=True)
class KeypointSchema:
    """The keypoint layout of one kind of body.

    Args:
        name: short name, used by :func:`get_schema` (case-insensitive).
        keypoints: ``K`` unique point names, in the order of every ``[K, ...]`` array.
        flip_pairs: disjoint ``(left, right)`` index pairs swapped by a horizontal flip.
        skeleton: ``(i, j)`` index pairs drawn as limbs (visualisation only).
        eval_groups: result column name -> indices of the joints it averages, in column order
            (PoseTrack: ``Head`` = head_top, head_bottom, nose; ``Shoulder`` = both shoulders ...).
        evaluated: indices of the joints that get an AP; default: every index in ``eval_groups``
            in increasing order. Every group index must be evaluated.

    Raises:
        KpdiffInputError: on duplicate or empty names, an index out of ``[0, K)``, a pair of a
            point with itself, overlapping flip pairs, an empty group or a group joint that is
            not evaluated.
    """

    name: str
    keypoints: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...] = ()
    skeleton: tuple[tuple[int, int], ...] = ()
    eval_groups: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    evaluated: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        put = object.__setattr__  # frozen: normalise the fields once, here
        put(self, "keypoints", tuple(str(k) for k in self.keypoints))
        put(self, "flip_pairs", tuple((int(a), int(b)) for a, b in self.flip_pairs))
        put(self, "skeleton", tuple((int(a), int(b)) for a, b in self.skeleton))
        groups = {str(k): tuple(int(i) for i in v) for k, v in dict(self.eval_groups).items()}
        put(self, "eval_groups", MappingProxyType(groups))
        evaluated = tuple(int(i) for i in self.evaluated) or tuple(
            sorted({i for v in groups.values() for i in v})
        )
        put(self, "evaluated", evaluated)
        self._validate()

    def _validate(self) -> None:
        where = f"KeypointSchema {self.name!r}"
        k = len(self.keypoints)
        if k == 0 or any(not n for n in self.keypoints):
            raise KpdiffInputError(
                f"{where}: keypoint names must be non-empty, got {self.keypoints}"
            )
        if len(set(self.keypoints)) != k:
            raise KpdiffInputError(f"{where}: duplicate keypoint names in {self.keypoints}")

        def check(label: str, idx: tuple[int, ...]) -> None:
            bad = [i for i in idx if not 0 <= i < k]
            if bad:
                raise KpdiffInputError(f"{where}: {label} has indices {bad} outside [0, {k})")

        for label, pairs in (("flip_pairs", self.flip_pairs), ("skeleton", self.skeleton)):
            for a, b in pairs:
                check(label, (a, b))
                if a == b:
                    raise KpdiffInputError(f"{where}: {label} pairs point {a} with itself")
        flat = [i for p in self.flip_pairs for i in p]
        if len(set(flat)) != len(flat):
            raise KpdiffInputError(f"{where}: flip_pairs {self.flip_pairs} are not disjoint")
        for col, idx in self.eval_groups.items():
            check(f"eval_groups[{col!r}]", idx)
            if not idx:
                raise KpdiffInputError(f"{where}: eval_groups[{col!r}] is empty")
        check("evaluated", self.evaluated)
        if len(set(self.evaluated)) != len(self.evaluated):
            raise KpdiffInputError(f"{where}: duplicate indices in evaluated {self.evaluated}")
        for col, idx in self.eval_groups.items():
            missing = sorted(set(idx) - set(self.evaluated))
            if missing:
                raise KpdiffInputError(
                    f"{where}: eval_groups[{col!r}] uses joints {missing} that are not evaluated"
                )

    def __hash__(self) -> int:
        return hash((self.name, self.keypoints, self.flip_pairs, self.evaluated))

    @property
    def num_keypoints(self) -> int:
        """``K``, the number of keypoints."""
        return len(self.keypoints)

    def index(self, name: str) -> int:
        """Position of the keypoint called ``name``; :class:`KpdiffInputError` if unknown."""
        try:
            return self.keypoints.index(name)
        except ValueError:
            raise KpdiffInputError(
                f"KeypointSchema {self.name!r} has no keypoint {name!r}; it has {self.keypoints}"
            ) from None

    @property
    def flip_permutation(self) -> np.ndarray:
        """``[K]`` int array: ``flipped[..., k, :] = x[..., perm[k], :]`` mirrors left and right."""
        perm = np.arange(self.num_keypoints)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm


_SKELETON_17 = tuple(
    (a - 1, b - 1)  # the COCO / PoseTrack18 files list 1-based limbs
    for a, b in (
        (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8),
        (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
    )
)  # fmt: skip
_BODY = (
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
_LIMB_GROUPS = {
    "Shoulder": (5, 6), "Elbow": (7, 8), "Wrist": (9, 10), "Hip": (11, 12), "Knee": (13, 14),
    "Ankle": (15, 16),
}  # fmt: skip

POSETRACK = KeypointSchema(
    name="posetrack",
    keypoints=("nose", "head_bottom", "head_top", "left_ear", "right_ear", *_BODY),
    flip_pairs=((3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    skeleton=_SKELETON_17,
    eval_groups={"Head": (2, 1, 0), **_LIMB_GROUPS},  # ears (3, 4) are never evaluated
)
"""PoseTrack17/18/21 order (poseval's 15 evaluated joints; the ears are placeholders)."""

COCO = KeypointSchema(
    name="coco",
    keypoints=("nose", "left_eye", "right_eye", "left_ear", "right_ear", *_BODY),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    skeleton=_SKELETON_17,
    eval_groups={"Head": (0, 1, 2, 3, 4), **_LIMB_GROUPS},
)
"""MS-COCO person keypoints (17 points, all evaluated)."""

QUADRUPED = KeypointSchema(
    name="quadruped",
    keypoints=(
        "nose", "forehead", "withers", "tail_base", "tail_tip",
        "front_left_knee", "front_right_knee", "front_left_paw", "front_right_paw",
        "hind_left_knee", "hind_right_knee", "hind_left_paw", "hind_right_paw",
    ),
    flip_pairs=((5, 6), (7, 8), (9, 10), (11, 12)),
    skeleton=(
        (0, 1), (1, 2), (2, 3), (3, 4), (2, 5), (5, 7), (2, 6), (6, 8),
        (3, 9), (9, 11), (3, 10), (10, 12),
    ),
    eval_groups={"Head": (0, 1), "Body": (2, 3, 4), "Front": (5, 6, 7, 8), "Hind": (9, 10, 11, 12)},
)  # fmt: skip
"""An example non-human schema: 13 points of a four-legged animal (the synthetic dataset draws it
with :data:`kpdiff.data.synthetic.QUADRUPED_RIG`)."""

_REGISTRY: dict[str, KeypointSchema] = {
    "posetrack": POSETRACK,
    "coco": COCO,
    "quadruped": QUADRUPED,
}


def register_schema(schema: KeypointSchema, *, overwrite: bool = False) -> KeypointSchema:
    """Make ``schema`` reachable as ``get_schema(schema.name)``; returns it.

    Args:
        schema: the schema to register.
        overwrite: replace a registered schema of the same name (default ``False``: raise).
    """
    key = schema.name.lower()
    if key in _REGISTRY and _REGISTRY[key] is not schema and not overwrite:
        raise KpdiffInputError(f"a keypoint schema named {schema.name!r} is already registered")
    _REGISTRY[key] = schema
    return schema


def get_schema(name: str | KeypointSchema) -> KeypointSchema:
    """The schema called ``name`` (case-insensitive); a schema passed in is returned as is.

    Raises:
        KpdiffInputError: when no schema of that name is known (the message lists the known ones).
    """
    if isinstance(name, KeypointSchema):
        return name
    try:
        return _REGISTRY[str(name).lower()]
    except KeyError:
        raise KpdiffInputError(
            f"unknown keypoint schema {name!r}; known: {sorted(_REGISTRY)}"
        ) from None
