"""Differential tests: ``kpdiff evaluate``'s AP against the official poseval on the same files.

Hypothesis draws multi-video PoseTrack18 and PoseTrack17 cases (labelled and unlabelled frames,
frames without persons, ignore regions including degenerate and self-intersecting polygons,
missing and extra joints, visibility 0 with coordinates, joints at the origin, missing scores,
duplicated and false-positive persons, equal scores, zero-size head boxes), writes them as files,
runs poseval's own ``load_data_dir`` + ``evaluateAP`` on them in-process and kpdiff's reader +
metric, and compares every joint and every column to 1e-9. Where poseval fails on a file,
kpdiff must raise :class:`KpdiffInputError` instead.

The oracle is ``../shared/tools/poseval`` (unmodified); the tests skip when it is absent.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpdiff.errors import KpdiffInputError
from kpdiff.metrics import evaluate_files

POSEVAL = Path(
    os.environ.get(
        "KPDIFF_POSEVAL", Path(__file__).resolve().parents[3] / "shared" / "tools" / "poseval"
    )
)
pytestmark = pytest.mark.skipif(
    not (POSEVAL / "poseval" / "eval_helpers.py").is_file(),
    reason=f"the official poseval is not at {POSEVAL}",
)

# poseval's joint ids 0..14, named as kpdiff names them (poseval's "neck" is head_bottom).
POSEVAL_JOINTS = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
    "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
    "head_bottom", "nose", "head_top",
)  # fmt: skip
COCO_ORDER = (
    "nose", "head_bottom", "head_top", "left_ear", "right_ear", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
# poseval's printed columns (getCum): Head = mean(head_top, neck, nose), then left/right pairs.
COLUMNS = {
    "Head": ("head_top", "head_bottom", "nose"),
    "Shoulder": ("right_shoulder", "left_shoulder"),
    "Elbow": ("right_elbow", "left_elbow"),
    "Wrist": ("right_wrist", "left_wrist"),
    "Hip": ("right_hip", "left_hip"),
    "Knee": ("right_knee", "left_knee"),
    "Ankle": ("right_ankle", "left_ankle"),
}


def _poseval():
    if str(POSEVAL) not in sys.path:
        sys.path.insert(0, str(POSEVAL))
    from poseval import eval_helpers
    from poseval.evaluateAP import evaluateAP

    return eval_helpers, evaluateAP


def poseval_ap(gt_dir: Path, pred_dir: Path) -> tuple[dict[str, float], dict[str, float]]:
    """poseval's per-joint APs and its table columns (``Mean`` = its "Total")."""
    eval_helpers, evaluateAP = _poseval()
    with (
        contextlib.redirect_stdout(io.StringIO()),
        tempfile.TemporaryDirectory() as out,
    ):
        gt, pr = eval_helpers.load_data_dir(["", f"{gt_dir}/", f"{pred_dir}/"])
        ap = evaluateAP(gt, pr, out, False, False)[0][:, 0]
    joints = dict(zip(POSEVAL_JOINTS, ap[:15].tolist(), strict=True))
    columns = {c: float(np.mean([joints[j] for j in js])) for c, js in COLUMNS.items()}
    columns["Mean"] = float(ap[15])
    return joints, columns


# --------------------------------------------------------------------------- case strategies

coord = st.one_of(
    st.integers(0, 40).map(float),
    st.just(0.0),
    st.floats(0, 40, allow_nan=False).map(lambda v: round(v, 2)),
)
score = st.one_of(
    st.sampled_from([0.0, 0.25, 0.5, 1.0]),  # ties
    st.floats(0, 1, allow_nan=False),
)


@st.composite
def gt_joint(draw) -> tuple[float, float, float] | None:
    """``None`` (absent, written as (0, 0, 0)) or ``(x, y, visibility)``."""
    if draw(st.integers(0, 4)) == 0:
        return None
    x, y = draw(coord), draw(coord)
    # (0, 0, 0) is absent in a PoseTrack18 file but a listed point in a PoseTrack17 one
    return x, y, float(draw(st.sampled_from([0, 1, 2])))


@st.composite
def head_box(draw) -> list[float]:
    x, y = draw(coord), draw(coord)
    w = draw(st.sampled_from([0.0, 3.0, 6.0, 8.0, 12.0]) | st.integers(0, 14).map(float))
    h = draw(st.sampled_from([0.0, 4.0, 8.0, 10.0]) | st.integers(0, 14).map(float))
    return [x, y, w, h]


@st.composite
def polygon(draw) -> list[tuple[float, float]]:
    kind = draw(st.sampled_from(["random", "square", "collinear", "bowtie", "empty", "short"]))
    if kind == "empty":
        return []
    if kind == "short":  # not a polygon: poseval fails, kpdiff must say so
        return [(draw(coord), draw(coord)) for _ in range(draw(st.integers(1, 2)))]
    if kind == "square":
        x0, y0, s = draw(coord), draw(coord), draw(st.integers(1, 30))
        return [(x0, y0), (x0 + s, y0), (x0 + s, y0 + s), (x0, y0 + s)]
    if kind == "collinear":
        x0, d = draw(coord), draw(st.integers(1, 10))
        return [(x0, x0), (x0 + d, x0 + d), (x0 + 2 * d, x0 + 2 * d)]
    if kind == "bowtie":
        a, b = draw(st.integers(0, 20)), draw(st.integers(5, 30))
        return [(a, a), (a + b, a + b), (a + b, a), (a, a + b)]
    n = draw(st.integers(3, 6))
    return [(draw(coord), draw(coord)) for _ in range(n)]


@st.composite
def frame_case(draw) -> dict[str, Any]:
    """One frame: GT persons (joint lists + head box) and predictions (joints + scores)."""
    n_gt = draw(st.integers(0, 3))
    gts = [
        {"joints": [draw(gt_joint()) for _ in range(15)], "head": draw(head_box())}
        for _ in range(n_gt)
    ]
    preds = []
    for _ in range(draw(st.integers(0, 4))):
        if gts and draw(st.booleans()):  # a noisy copy of a GT person (a duplicate when twice)
            src = draw(st.sampled_from(gts))["joints"]
            d = draw(st.sampled_from([0.0, 1.0, 2.0, 3.0, 5.0]))
            joints = [
                None
                if j is None or draw(st.integers(0, 6)) == 0
                else (j[0] + draw(st.sampled_from([-d, 0.0, d])), j[1] + d)
                for j in src
            ]
        else:  # a false positive (or a person far from every GT)
            joints = [
                None if draw(st.integers(0, 3)) == 0 else (draw(coord), draw(coord))
                for _ in range(15)
            ]
        if draw(st.integers(0, 8)) == 0:  # an extra joint where the GT has none
            joints[draw(st.integers(0, 14))] = (draw(coord), draw(coord))
        kind = draw(st.sampled_from(["all", "all", "all", "none", "empty"]))  # none: no field
        scores = [draw(score) for _ in range(15)] if kind == "all" else kind
        if draw(st.integers(0, 9)) == 0:  # a joint at the origin with score 0
            k = draw(st.integers(0, 14))
            joints[k] = (0.0, 0.0)
            if isinstance(scores, list):
                scores[k] = 0.0
        preds.append({"joints": joints, "scores": scores})
    regions = draw(st.lists(polygon(), max_size=2)) if draw(st.integers(0, 3)) == 0 else []
    labeled = draw(st.sampled_from([True, False, None]))
    return {"gts": gts, "preds": preds, "regions": regions, "labeled": labeled}


cases = st.lists(st.lists(frame_case(), min_size=1, max_size=5), min_size=1, max_size=3)


# --------------------------------------------------------------------------- writers


def _video_name(v: int) -> str:
    return f"{v + 1:06d}_mpii_test"


def _write18(videos: list[list[dict]], gt_dir: Path, pred_dir: Path) -> None:
    ids = {n: i for i, n in enumerate(POSEVAL_JOINTS)}
    for v, frames in enumerate(videos):
        name = _video_name(v)
        out: dict[str, dict] = {}
        for which in ("gt", "pred"):
            images, anns = [], []
            for f, fr in enumerate(frames):
                iid = 10_000_000_000 + (v + 1) * 10_000 + f
                im: dict[str, Any] = {
                    "id": iid,
                    "file_name": f"images/val/{name}/{f:06d}.jpg",
                    "frame_id": iid,
                    "vid_id": f"{v + 1:06d}",
                    "nframes": len(frames),
                }
                if fr["labeled"] is not None:
                    im["is_labeled"] = fr["labeled"]
                if which == "gt" and fr["regions"]:
                    im["ignore_regions_x"] = [[p[0] for p in r] for r in fr["regions"]]
                    im["ignore_regions_y"] = [[p[1] for p in r] for r in fr["regions"]]
                images.append(im)
                persons = fr["gts"] if which == "gt" else fr["preds"]
                for t, p in enumerate(persons):
                    kp = [0.0] * 51
                    scores = [0.0] * 17
                    for c, lm in enumerate(COCO_ORDER):
                        if lm not in ids:
                            continue
                        j = p["joints"][ids[lm]]
                        if j is None:
                            continue
                        if which == "gt":
                            kp[3 * c : 3 * c + 3] = j
                        else:
                            kp[3 * c : 3 * c + 3] = [j[0], j[1], 1.0]
                            scores[c] = p["scores"][ids[lm]] if isinstance(p["scores"], list) else 0
                    a: dict[str, Any] = {
                        "id": iid * 100 + t, "image_id": iid, "track_id": t, "category_id": 1,
                        "keypoints": kp,
                    }  # fmt: skip
                    if which == "gt":
                        a["bbox_head"] = p["head"]
                        a["scores"] = []
                    elif p["scores"] == "empty":
                        a["scores"] = []
                    elif isinstance(p["scores"], list):
                        a["scores"] = scores
                    anns.append(a)
            cat = {"supercategory": "person", "id": 1, "name": "person",
                   "keypoints": list(COCO_ORDER), "skeleton": []}  # fmt: skip
            out[which] = {"images": images, "annotations": anns, "categories": [cat]}
        (gt_dir / f"{name}.json").write_text(json.dumps(out["gt"]))
        (pred_dir / f"{name}.json").write_text(json.dumps(out["pred"]))


def _write17(videos: list[list[dict]], gt_dir: Path, pred_dir: Path) -> None:
    for v, frames in enumerate(videos):
        name = _video_name(v)
        for which, folder in (("gt", gt_dir), ("pred", pred_dir)):
            annolist = []
            for f, fr in enumerate(frames):
                rects = []
                for t, p in enumerate(fr["gts"] if which == "gt" else fr["preds"]):
                    points = []
                    for j, pt in enumerate(p["joints"]):
                        if pt is None:
                            continue
                        point: dict[str, Any] = {"id": [j], "x": [pt[0]], "y": [pt[1]]}
                        if which == "gt":
                            point["is_visible"] = [int(pt[2])]
                        elif isinstance(p["scores"], list):
                            point["score"] = [p["scores"][j]]
                        points.append(point)
                    r: dict[str, Any] = {"track_id": [t], "annopoints": [{"point": points}]}
                    if which == "gt":
                        x, y, w, h = p["head"]
                        r.update(x1=[x], y1=[y], x2=[x + w], y2=[y + h])
                    rects.append(r)
                entry: dict[str, Any] = {
                    "image": [{"name": f"images/{name}/{f + 1:08d}.jpg"}],
                    "annorect": rects,
                }
                if fr["labeled"] is not None:
                    entry["is_labeled"] = [int(fr["labeled"])]
                if which == "gt" and fr["regions"]:
                    entry["ignore_regions"] = [
                        {"point": [{"x": [x], "y": [y]} for x, y in r]} for r in fr["regions"]
                    ]
                annolist.append(entry)
            (folder / f"{name}.json").write_text(json.dumps({"annolist": annolist}))


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-9


def check_case(videos: list[list[dict]], fmt: str) -> None:
    """Write ``videos`` in ``fmt``, evaluate with both, compare (or both refuse the files)."""
    with tempfile.TemporaryDirectory() as tmp:
        gt_dir, pred_dir = Path(tmp, "gt"), Path(tmp, "pred")
        gt_dir.mkdir()
        pred_dir.mkdir()
        (_write18 if fmt == "18" else _write17)(videos, gt_dir, pred_dir)
        try:
            want_j, want_c = poseval_ap(gt_dir, pred_dir)
        except Exception:  # poseval refuses the files (or crashes on them)
            with pytest.raises(KpdiffInputError):
                evaluate_files(gt_dir, pred_dir)
            return
        if not any(fr["gts"] for frames in videos for fr in frames):
            # poseval prints 0.0 everywhere for a set without a single person: undefined
            with pytest.raises(KpdiffInputError, match="no frame to evaluate"):
                evaluate_files(gt_dir, pred_dir)
            return
        got = evaluate_files(gt_dir, pred_dir)
    bad = {k: (want_j[k], got.joints[k]) for k in want_j if not _same(want_j[k], got.joints[k])}
    bad |= {k: (want_c[k], got.columns[k]) for k in want_c if not _same(want_c[k], got.columns[k])}
    assert not bad, f"poseval vs kpdiff differ: {bad}"


SETTINGS = settings(
    max_examples=int(os.environ.get("KPDIFF_PARITY_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@SETTINGS
@given(cases)
def test_posetrack18_equals_poseval(videos) -> None:
    check_case(videos, "18")


@SETTINGS
@given(cases)
def test_posetrack17_equals_poseval(videos) -> None:
    check_case(videos, "17")
