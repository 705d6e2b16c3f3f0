"""Figure rigs: how a schema's body is built, drawn and animated, and the rig registry.

The built-in rigs are :data:`HUMAN_RIG` (schema ``posetrack``) and :data:`QUADRUPED_RIG`
(schema ``quadruped``, :data:`kpdiff.data.schemas.QUADRUPED`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from kpdiff.data.schemas import KeypointSchema
from kpdiff.errors import KpdiffInputError


@dataclass(frozen=True)
class Part:
    """One drawn piece of a figure.

    Args:
        joints: two joint names (``"capsule"``, ``"ellipse"``) or three or more (``"polygon"``).
            A capsule from a joint to itself is a disc.
        width: capsule thickness / polygon outline, in figure units; for an ellipse the ratio of
            its minor to its major axis. Default ``0.06``.
        material: index of the texture it is filled with (see ``FigureRig.materials``).
        shape: ``"capsule"``, ``"ellipse"`` or ``"polygon"``. Default ``"capsule"``.
        depth_bias: added to the part's mean depth when ordering parts (positive: further).
    """

    joints: tuple[str, ...]
    width: float = 0.06
    material: int = 0
    shape: Literal["capsule", "ellipse", "polygon"] = "capsule"
    depth_bias: float = 0.0


@dataclass(frozen=True)
class Swing:
    """A joint's local rotation over one motion cycle: ``offset + amplitude · sin(2π(φ + phase))``.

    The rotation (degrees, about the figure axis ``axis`` in the parent's frame) turns the bone
    from the joint's parent to the joint, and with it the joint's whole subtree.
    """

    joint: str
    axis: Literal["x", "y", "z"]
    offset: float = 0.0
    amplitude: float = 0.0
    phase: float = 0.0


@dataclass(frozen=True)
class Motion:
    """A motion cycle (walk, wave, …).

    Args:
        swings: the joint rotations.
        frequency: range of cycles per frame, drawn per figure. Default ``(1/24, 1/12)``.
        speed: travel along the facing direction, in figure units per cycle. Default ``0``.
        weight: relative probability of a figure doing this motion. Default ``1``.
    """

    swings: tuple[Swing, ...]
    frequency: tuple[float, float] = (1 / 24, 1 / 12)
    speed: float = 0.0
    weight: float = 1.0


@dataclass(frozen=True)
class FigureRig:
    """How to build, draw and animate a figure of a schema.

    Args:
        rest: joint name → rest position ``(x, y, z)`` in figure units (every schema joint).
        root: the kinematic tree's root joint.
        parts: the drawn pieces; empty → one capsule per ``schema.skeleton`` edge.
        motions: name → :class:`Motion`; empty → the figure only wiggles.
        parents: joint → parent joint; empty → a breadth-first tree of the schema's skeleton.
        head: two joints ``(a, b)`` that set the figure's reference size: every annotated
            figure gets a head box (``bbox_head``), the box of the ellipse from ``a`` to ``b``
            (``head_ratio`` times as wide as long), scaled by ``SyntheticConfig.head_scale``.
            The PoseTrack AP counts a joint as correct within 0.3 × that box's diagonal
            (PCKh@0.5), i.e. ``0.3 · head_scale · √(1 + head_ratio²) · |a − b|`` with
            ``|a − b|`` the joints' distance in the image: about half of it with the defaults.
            People and animals use their head; for a body without one pick a rigid segment of
            the size the tolerance should scale with (a hand: the wrist and the middle finger's
            base; see "The reference size of other bodies" in ``docs/data.md``). Required:
            building a dataset from a rig without it raises ``KpdiffInputError``. Default
            ``None``.
        head_ratio: the head ellipse's width over its length. Default ``0.8``.
        materials: number of textures per figure (``max(part.material) + 1`` when ``0``).
        palettes: material → RGB colours to pick from (others get random colours).
        shades: material → ``(source material, brightness)``: a darker copy of another texture.
        forward: the facing direction at rest, in figure axes. Default ``(0, 0, -1)``.
        yaw_range: rotation about the vertical axis in degrees. Default ``(-75, 75)``.
        turn_prob: probability of an extra 180° turn. Default ``0``.
    """

    rest: Mapping[str, tuple[float, float, float]]
    root: str
    parts: tuple[Part, ...] = ()
    motions: Mapping[str, Motion] = field(default_factory=dict)
    parents: Mapping[str, str] = field(default_factory=dict)
    head: tuple[str, str] | None = None
    head_ratio: float = 0.8
    materials: int = 0
    palettes: Mapping[int, tuple[tuple[int, int, int], ...]] = field(default_factory=dict)
    shades: Mapping[int, tuple[int, float]] = field(default_factory=dict)
    forward: tuple[float, float, float] = (0.0, 0.0, -1.0)
    yaw_range: tuple[float, float] = (-75.0, 75.0)
    turn_prob: float = 0.0


def _human_rig() -> FigureRig:
    """Person facing the camera, for ``POSETRACK`` (height 1 from head top to ankle)."""
    rest: dict[str, tuple[float, float, float]] = {
        "head_top": (0, 0, 0), "nose": (0, 0.085, -0.07), "head_bottom": (0, 0.15, 0),
        "left_ear": (0.06, 0.08, 0), "right_ear": (-0.06, 0.08, 0),
    }  # fmt: skip
    for side, s in (("left", 1), ("right", -1)):
        rest |= {
            f"{side}_shoulder": (0.12 * s, 0.2, 0), f"{side}_elbow": (0.14 * s, 0.37, 0),
            f"{side}_wrist": (0.15 * s, 0.53, 0), f"{side}_hip": (0.08 * s, 0.52, 0),
            f"{side}_knee": (0.085 * s, 0.75, 0), f"{side}_ankle": (0.09 * s, 0.97, 0),
        }  # fmt: skip
    parents = {"nose": "head_bottom", "head_top": "head_bottom"}
    for side in ("left", "right"):
        parents |= {
            f"{side}_ear": "head_bottom", f"{side}_shoulder": "head_bottom",
            f"{side}_elbow": f"{side}_shoulder", f"{side}_wrist": f"{side}_elbow",
            f"{side}_hip": "head_bottom", f"{side}_knee": f"{side}_hip",
            f"{side}_ankle": f"{side}_knee",
        }  # fmt: skip
    # materials: 0 skin, 1 top, 2 sleeve, 3 left leg, 4 right leg, 5 shoes, 6 nose
    parts = [Part(("head_bottom", "head_bottom"), 0.07, 0)]
    for side, leg in (("left", 3), ("right", 4)):
        parts += [
            Part((f"{side}_hip", f"{side}_knee"), 0.075, leg),
            Part((f"{side}_knee", f"{side}_ankle"), 0.06, leg),
            Part((f"{side}_ankle", f"{side}_ankle"), 0.06, 5),
        ]
    parts += [
        Part(
            ("left_shoulder", "right_shoulder", "right_hip", "left_hip"), 0.08, 1, "polygon", 0.02
        ),
        Part(("left_hip", "right_hip"), 0.09, 3, depth_bias=0.015),
    ]
    for side in ("left", "right"):
        parts += [
            Part(("head_bottom", f"{side}_shoulder"), 0.05, 1, depth_bias=0.01),
            Part((f"{side}_shoulder", f"{side}_elbow"), 0.06, 2),
            Part((f"{side}_elbow", f"{side}_wrist"), 0.048, 0),
            Part((f"{side}_wrist", f"{side}_wrist"), 0.055, 0),
            Part((f"{side}_ear", f"{side}_ear"), 0.035, 0, depth_bias=0.01),
        ]
    parts += [Part(("head_top", "head_bottom"), 0.8, 0, "ellipse"), Part(("nose", "nose"), 0.03, 6)]

    def arms(l_off: float, l_amp: float, r_off: float, r_amp: float, ph: float = 0.5) -> tuple:
        return (
            Swing("left_elbow", "z", -l_off, l_amp, ph),
            Swing("right_elbow", "z", r_off, r_amp, ph),
        )

    walk = (
        Swing("left_knee", "x", 0, 28, 0.0), Swing("right_knee", "x", 0, 28, 0.5),
        Swing("left_ankle", "x", 25, 22, 0.75), Swing("right_ankle", "x", 25, 22, 0.25),
        Swing("left_elbow", "x", 0, 24, 0.5), Swing("right_elbow", "x", 0, 24, 0.0),
        Swing("left_wrist", "x", -20, 12, 0.5), Swing("right_wrist", "x", -20, 12, 0.0),
        *arms(8, 0, 8, 0),
    )  # fmt: skip
    wave = (
        *arms(8, 4, 110, 12, 0.0), Swing("right_wrist", "z", 25, 35, 0.25),
        Swing("left_knee", "x", 0, 3), Swing("head_bottom", "z", 0, 3, 0.1),
    )  # fmt: skip
    jacks = (
        *arms(80, 75, 80, 75, 0.0),
        Swing("left_wrist", "z", -10, 10), Swing("right_wrist", "z", 10, 10),
        Swing("left_knee", "z", -9, 9), Swing("right_knee", "z", 9, 9),
    )  # fmt: skip
    idle = (
        *arms(12, 6, 12, 6), Swing("left_wrist", "x", -25, 15), Swing("right_wrist", "x", -25, 15),
        Swing("head_bottom", "z", 0, 4), Swing("left_knee", "x", 5, 5, 0.3),
    )  # fmt: skip
    return FigureRig(
        rest=rest,
        root="head_bottom",
        parts=tuple(parts),
        motions={
            "walk": Motion(walk, (1 / 32, 1 / 18), speed=0.8, weight=2.0),
            "wave": Motion(wave, (1 / 16, 1 / 8)),
            "jacks": Motion(jacks, (1 / 20, 1 / 10)),
            "idle": Motion(idle, (1 / 40, 1 / 20)),
        },
        parents=parents,
        head=("head_top", "head_bottom"),
        palettes={
            0: ((224, 172, 140), (198, 134, 100), (141, 85, 60), (255, 205, 170), (90, 56, 37)),
            5: ((30, 30, 30), (80, 50, 30), (230, 230, 230), (40, 40, 90)),
        },
        shades={2: (1, 0.8), 4: (3, 0.85), 6: (0, 0.55)},
    )


HUMAN_RIG = _human_rig()
"""The built-in rig of the ``posetrack`` schema: a person facing the camera at yaw 0."""


def _quadruped_rig() -> FigureRig:
    """Side-view four-legged animal facing ``+x`` (length 1, nose to tail tip)."""
    rest: dict[str, tuple[float, float, float]] = {
        "nose": (0.55, -0.05, 0), "forehead": (0.42, -0.2, 0), "withers": (0.25, 0, 0),
        "tail_base": (-0.3, 0, 0), "tail_tip": (-0.48, -0.16, 0),
    }  # fmt: skip
    parts = [
        Part(("withers", "tail_base"), 0.22, 0),
        Part(("withers", "forehead"), 0.12, 0),
        Part(("forehead", "nose"), 0.7, 0, "ellipse"),
        Part(("tail_base", "tail_tip"), 0.045, 0),
        Part(("nose", "nose"), 0.04, 2),
    ]
    walk = []
    for side, z, mat, ph in (("left", 0.07, 1, 0.0), ("right", -0.07, 0, 0.5)):
        for end, x, anchor in (("front", 0.25, "withers"), ("hind", -0.28, "tail_base")):
            rest[f"{end}_{side}_knee"] = (x, 0.24, z)
            rest[f"{end}_{side}_paw"] = (x + 0.02, 0.46, z)
            parts += [
                Part((anchor, f"{end}_{side}_knee"), 0.075, mat),
                Part((f"{end}_{side}_knee", f"{end}_{side}_paw"), 0.055, mat),
            ]
            phase = ph if end == "front" else ph + 0.5
            walk += [
                Swing(f"{end}_{side}_knee", "z", 0, 22, phase),
                Swing(f"{end}_{side}_paw", "z", -15, 15, phase + 0.25),
            ]
    walk += [Swing("tail_tip", "z", 0, 10), Swing("forehead", "z", 0, 4, 0.25)]
    idle = (Swing("tail_tip", "z", 5, 25), Swing("forehead", "z", 0, 8, 0.3))
    return FigureRig(
        rest=rest,
        root="withers",
        parts=tuple(parts),
        motions={
            "walk": Motion(tuple(walk), (1 / 28, 1 / 14), speed=0.7, weight=2.0),
            "idle": Motion(idle, (1 / 30, 1 / 15)),
        },
        head=("forehead", "nose"),
        head_ratio=0.7,
        palettes={2: ((20, 20, 20),)},
        shades={1: (0, 0.75)},
        forward=(1.0, 0.0, 0.0),
        yaw_range=(-35.0, 35.0),
        turn_prob=0.5,
    )


QUADRUPED_RIG = _quadruped_rig()
"""The rig of :data:`QUADRUPED`."""

_RIGS: dict[str, FigureRig] = {"posetrack": HUMAN_RIG, "quadruped": QUADRUPED_RIG}


def register_rig(schema_name: str, rig: FigureRig, *, overwrite: bool = False) -> FigureRig:
    """Make ``rig`` the default rig of the schema called ``schema_name``; returns it.

    Args:
        schema_name: the schema's ``name`` (case-insensitive).
        rig: the rig.
        overwrite: replace an existing rig of that schema. Default ``False`` (raise).
    """
    key = schema_name.lower()
    if key in _RIGS and _RIGS[key] is not rig and not overwrite:
        raise KpdiffInputError(f"a figure rig for schema {schema_name!r} is already registered")
    _RIGS[key] = rig
    return rig


def get_rig(schema: KeypointSchema | str) -> FigureRig:
    """The registered rig of a schema (``posetrack`` and ``quadruped`` are built in)."""
    name = schema if isinstance(schema, str) else schema.name
    if name.lower() not in _RIGS:
        raise KpdiffInputError(
            f"schema {name!r} has no figure rig; pass SyntheticConfig(rig=FigureRig(...)) or call "
            f"register_rig; known: {sorted(_RIGS)}"
        )
    return _RIGS[name.lower()]
