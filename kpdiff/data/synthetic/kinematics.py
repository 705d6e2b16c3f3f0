"""A figure rig resolved against its schema, and its forward kinematics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kpdiff.data.schemas import KeypointSchema
from kpdiff.data.synthetic.rigs import FigureRig, Part
from kpdiff.errors import KpdiffInputError


@dataclass
class Kinematics:
    """A rig resolved against a schema: indices instead of names, a traversal order, bones."""

    schema: KeypointSchema
    rig: FigureRig
    parent: np.ndarray  # [K] int, -1 at the root
    order: list[int]  # parents before children
    bones: np.ndarray  # [K, 3] rest offset from the parent
    parts: list[tuple[str, np.ndarray, float, int, float]]  # shape, joints, width, material, bias
    root: int
    materials: int
    head: tuple[int, int]  # the two joints the head box spans
    extent: tuple[float, float, float]  # rest (top, bottom) y and max distance from the root

    @classmethod
    def build(cls, schema: KeypointSchema, rig: FigureRig) -> Kinematics:
        names = schema.keypoints
        where = f"FigureRig for schema {schema.name!r}"
        missing = [n for n in names if n not in rig.rest]
        unknown = [n for n in rig.rest if n not in names]
        if missing or unknown:
            raise KpdiffInputError(f"{where}: rest pose lacks {missing}, has unknown {unknown}")
        idx = {n: i for i, n in enumerate(names)}

        def index(name: str, what: str) -> int:
            if name not in idx:
                raise KpdiffInputError(f"{where}: {what} names unknown joint {name!r}")
            return idx[name]

        root = index(rig.root, "root")
        parent = np.full(len(names), -1)
        if rig.parents:
            for child, par in rig.parents.items():
                parent[index(child, "parents")] = index(par, "parents")
        else:  # breadth-first tree of the skeleton
            seen, queue = {root}, [root]
            for j in queue:
                for a, b in schema.skeleton:
                    for u, v in ((a, b), (b, a)):
                        if u == j and v not in seen:
                            parent[v], seen = j, seen | {v}
                            queue.append(v)
        order, queue = [], [root]
        while queue:
            j = queue.pop(0)
            order.append(j)
            queue += [c for c in range(len(names)) if parent[c] == j and c != root]
        if parent[root] != -1 or len(order) != len(names):
            lost = sorted(set(names) - {names[j] for j in order})
            raise KpdiffInputError(f"{where}: joints {lost} are not connected to root {rig.root!r}")
        rest = np.array([rig.rest[n] for n in names], np.float64)
        bones = rest - np.where(parent[:, None] >= 0, rest[parent], rest)
        specs = rig.parts or tuple(
            Part((names[a], names[b]), 0.06, i % 3) for i, (a, b) in enumerate(schema.skeleton)
        )
        parts = []
        for p in specs:
            joints = np.array([index(n, "a part") for n in p.joints])
            if len(joints) < (3 if p.shape == "polygon" else 2):
                raise KpdiffInputError(f"{where}: part {p.joints} has too few joints for {p.shape}")
            parts.append((p.shape, joints, p.width, p.material, p.depth_bias))
        for motion in rig.motions.values():
            for s in motion.swings:
                index(s.joint, "a motion")
        if rig.head is None:  # the metric's reference size: no evaluation without it
            raise KpdiffInputError(
                f"{where}: FigureRig.head is None; every annotated figure needs a head box "
                "(bbox_head), the PoseTrack AP's reference size (a joint is correct within 0.3 × "
                "its diagonal). Set FigureRig.head to two joints spanning the head or, for a body "
                "without one, a rigid segment whose length sets that size (a hand: the wrist and "
                "the middle finger's base); see 'The reference size of other bodies' in "
                "docs/data.md"
            )
        if len(rig.head) != 2 or rig.head[0] == rig.head[1]:
            raise KpdiffInputError(
                f"{where}: FigureRig.head must name two different joints, got {rig.head!r}"
            )
        head = (index(rig.head[0], "head"), index(rig.head[1], "head"))
        materials = rig.materials or 1 + max((p[3] for p in parts), default=0)
        reach = float(np.linalg.norm(rest - rest[root], axis=1).max())
        extent = (float(rest[:, 1].min() - rest[root, 1]), float(rest[:, 1].max() - rest[root, 1]))
        return cls(
            schema, rig, parent, order, bones, parts, root, materials, head, (*extent, reach)
        )

    def animate(self, swings: list[tuple[int, str, np.ndarray]], frames: int) -> np.ndarray:
        """Joint positions ``[T, K, 3]`` relative to the root for per-frame local rotations.

        Args:
            swings: ``(joint, axis, angles [T] in radians)``, applied in the given order.
            frames: ``T``.
        """
        local: dict[int, np.ndarray] = {}
        for j, axis, angles in swings:
            r = rotation(axis, angles)
            local[j] = local[j] @ r if j in local else r
        eye = np.broadcast_to(np.eye(3), (frames, 3, 3))
        rot: dict[int, np.ndarray] = {}
        pos = np.zeros((len(self.parent), frames, 3))
        for j in self.order:
            p = self.parent[j]
            base = eye if p < 0 else rot[p]
            rot[j] = base @ local[j] if j in local else base
            if p >= 0:
                pos[j] = pos[p] + rot[j] @ self.bones[j]
        return pos.transpose(1, 0, 2)


def rotation(axis: str, angles: np.ndarray) -> np.ndarray:
    """Rotation matrices ``[T, 3, 3]`` about a figure axis by ``angles [T]`` (radians)."""
    c, s = np.cos(angles), np.sin(angles)
    one, zero = np.ones_like(c), np.zeros_like(c)
    rows = {
        "x": [[one, zero, zero], [zero, c, -s], [zero, s, c]],
        "y": [[c, zero, s], [zero, one, zero], [-s, zero, c]],
        "z": [[c, -s, zero], [s, c, zero], [zero, zero, one]],
    }[axis]
    return np.stack([np.stack(r, -1) for r in rows], -2)
