"""Fuzzing every reader of user files: PoseTrack17/18/21 annotations and predictions, detector
box files, experiment YAML files, checkpoints (``config.json``, ``training_state.json``) and the
``kpdiff evaluate`` command on them.

Hypothesis starts from a valid file and damages it: a field deleted, a value replaced by one of
another type or an extreme one (NaN, 10^400, negative, empty, deeply nested), a list emptied or
duplicated, or the bytes cut short, garbled or re-encoded. Every input must end in one of two
ways: the reader accepts it and returns well-formed data (finite arrays of the right shape), or
it raises a :class:`~kpdiff.errors.KpdiffError` whose one-line message names the file. Any other
exception fails the test, and the command must not exit 0 on what the readers refuse.

``KPDIFF_FUZZ_EXAMPLES`` sets the examples per reader (default 60, about 30 s in all);
``KPDIFF_FUZZ_REPORT=FILE`` writes the totals per reader and outcome as JSON (docs/robustness.md
quotes such a run).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpdiff.data.detections import read_detections
from kpdiff.data.posetrack import read_posetrack, write_posetrack18
from kpdiff.data.schemas import POSETRACK
from kpdiff.data.structures import FrameAnnotation, PersonAnnotation, VideoAnnotation
from kpdiff.errors import KpdiffError

EXAMPLES = int(os.environ.get("KPDIFF_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    # CI replays the same inputs (a red run can be rerun and debugged); the exploring runs of
    # benchmarks/fuzz_report.py set KPDIFF_FUZZ_RANDOM=1 to draw new ones each time.
    derandomize=os.environ.get("KPDIFF_FUZZ_RANDOM") != "1",
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TOTALS: Counter[tuple[str, str]] = Counter()
K = POSETRACK.num_keypoints


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    target = os.environ.get("KPDIFF_FUZZ_REPORT")
    if target:
        rows = [{"reader": r, "outcome": o, "inputs": n} for (r, o), n in sorted(TOTALS.items())]
        Path(target).write_text(json.dumps(rows, indent=1) + "\n")


# ------------------------------------------------------------------------ damaged documents

_WEIRD = [None, True, False, 0, -1, -7, 1e308, -1e-300, "", "x", "0", [], {}, [None], [1, 2],
          {"a": 1}, 2**64, 0.5, "NaN", [[[[[]]]]]]  # fmt: skip
WEIRD = st.sampled_from(_WEIRD)
RAW_WEIRD = ["NaN", "Infinity", "-Infinity", "1" + "0" * 400, "[" * 3000 + "]" * 3000]


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Paths into ``doc`` (a few elements of each list), the root included."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:3]):
            out += _paths(v, (*prefix, i))
    return out


def _get(doc: Any, path: tuple) -> Any:
    for p in path:
        doc = doc[p]
    return doc


@st.composite
def damaged(draw, doc: Any, fmt: str = "json") -> tuple[bytes, str]:
    """``(file bytes, what was done)``: ``doc`` with one to three damages."""
    doc = copy.deepcopy(doc)
    raw: str | None = None
    done = []
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(doc)))
        kind = draw(st.sampled_from(["delete", "replace", "raw", "empty", "double", "nest"]))
        if not path:  # the root
            kind = "replace" if kind == "delete" else kind
        parent, key = (_get(doc, path[:-1]), path[-1]) if path else (None, None)
        value = _get(doc, path)
        if kind == "delete":
            del parent[key]
        elif kind == "replace" or (kind in ("empty", "double") and not isinstance(value, list)):
            new = copy.deepcopy(draw(WEIRD))  # later damages may change it in place
            if parent is None:
                doc = new
            else:
                parent[key] = new
        elif kind == "raw":  # a token json.dumps cannot write: NaN, 10^400, deep nesting
            raw = draw(st.sampled_from(RAW_WEIRD))
            marker = "__RAW_MARKER__"
            if parent is None:
                doc = marker
            else:
                parent[key] = marker
        elif kind == "empty":
            value.clear()
        elif kind == "double":
            value.extend(copy.deepcopy(value))
        else:  # nest: the value wrapped in a list
            if parent is None:
                doc = [doc]
            else:
                parent[key] = [value]
        done.append(f"{kind} {'/'.join(map(str, path)) or 'root'}")
        if raw is not None:
            break
    text = yaml.safe_dump(doc) if fmt == "yaml" else json.dumps(doc)
    if raw is not None:
        text = text.replace('"__RAW_MARKER__"' if fmt == "json" else "__RAW_MARKER__", raw)
    data = text.encode()
    byte_damage = draw(st.sampled_from(["none"] * 8 + ["cut", "garble", "latin1", "empty"]))
    if byte_damage == "cut":
        data = data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    elif byte_damage == "garble" and data:
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1 :]
    elif byte_damage == "latin1":
        data = data + " \xe9".encode("latin-1")
    elif byte_damage == "empty":
        data = b""
    done.append(byte_damage)
    return data, "; ".join(done)


def attempt(reader: str, path: Path, call) -> Any:
    """Run ``call``; count the outcome; a KpdiffError must name ``path`` in one line."""
    try:
        result = call()
    except KpdiffError as err:
        message = str(err)
        assert "\n" not in message, message
        assert str(path) in message or path.name in message, message
        TOTALS[reader, "clear error naming the file"] += 1
        return None
    TOTALS[reader, "accepted"] += 1
    return result


def check_videos(videos: list[VideoAnnotation], predictions: bool) -> None:
    """What a reader returns is well formed whatever it was given."""
    assert isinstance(videos, list) and videos
    for v in videos:
        assert isinstance(v.name, str) and v.frames
        for f in v.frames:
            assert isinstance(f, FrameAnnotation) and isinstance(f.image_path, str)
            assert isinstance(f.frame_index, int)
            for p in f.persons:
                assert isinstance(p, PersonAnnotation)
                kp = np.asarray(p.keypoints)
                assert kp.shape == (K, 3) and kp.dtype == np.float64 and np.isfinite(kp).all()
                if not predictions:
                    assert (kp[:, 2] >= 0).all()
                if p.head_box is not None:
                    assert np.asarray(p.head_box).shape == (4,)
                    assert np.isfinite(p.head_box).all()
                assert p.track_id is None or isinstance(p.track_id, int)
            for r in f.ignore_regions:
                assert np.asarray(r).ndim == 2 and np.isfinite(r).all()


# -------------------------------------------------------------------------- valid documents


def _video(n_frames: int = 3) -> VideoAnnotation:
    rng = np.random.default_rng(0)
    frames = []
    for f in range(n_frames):
        persons = []
        for t in range(2):
            kp = np.column_stack([rng.uniform(10, 90, (K, 2)), np.ones(K)])
            kp[3:5] = 0.0
            persons.append(PersonAnnotation(kp, head_box=np.array([20.0, 5, 40, 30]), track_id=t))
        regions = [np.array([[0.0, 0], [10, 0], [10, 10], [0, 10]])] if f == 1 else []
        frames.append(
            FrameAnnotation(
                f"images/val/000001_mpii_test/{f:06d}.jpg", f, 10_000_010_000 + f, True,
                persons, regions,
            )
        )  # fmt: skip
    return VideoAnnotation("000001_mpii_test", frames)


@pytest.fixture(scope="module")
def pt18(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("pt18") / "000001_mpii_test.json"
    write_posetrack18(_video(), path)
    return json.loads(path.read_text())


def _pt21(doc: dict) -> dict:
    doc = copy.deepcopy(doc)
    for im in doc["images"]:
        im["has_labeled_person"] = True
    for a in doc["annotations"]:
        a["person_id"] = a["track_id"]
    return doc


def _pt17(doc18: dict) -> dict:
    annolist = []
    for im in doc18["images"]:
        rects = []
        for a in (a for a in doc18["annotations"] if a["image_id"] == im["id"]):
            kp = np.asarray(a["keypoints"]).reshape(-1, 3)
            x, y, w, h = a["bbox_head"]
            points = [
                {"id": [j], "x": [float(kp[j, 0])], "y": [float(kp[j, 1])], "is_visible": [1]}
                for j in range(15)
            ]
            rects.append(
                {"x1": [x], "y1": [y], "x2": [x + w], "y2": [y + h], "score": [0.9],
                 "track_id": [a["track_id"]], "annopoints": [{"point": points}]}
            )  # fmt: skip
        annolist.append(
            {"image": [{"name": im["file_name"]}], "annorect": rects, "is_labeled": [1],
             "imgnum": [im["frame_id"] % 10_000 + 1]}
        )  # fmt: skip
    return {"annolist": annolist}


def _write(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------- annotation files


@pytest.mark.parametrize("fmt", ["posetrack17", "posetrack18", "posetrack21"])
@pytest.mark.parametrize("role", ["gt", "pred"])
@FUZZ
@given(st.data())
def test_annotation_readers(pt18, tmp_path_factory, fmt, role, data):
    base = {"posetrack18": pt18, "posetrack21": _pt21(pt18), "posetrack17": _pt17(pt18)}[fmt]
    raw, _ = data.draw(damaged(base))
    path = _write(tmp_path_factory.mktemp("f"), "000001_mpii_test.json", raw)
    predictions = role == "pred"
    videos = attempt(
        f"{fmt} {'predictions' if predictions else 'ground truth'}",
        path,
        lambda: read_posetrack(path, predictions=predictions),
    )
    if videos is not None:
        check_videos(videos, predictions)


@FUZZ
@given(st.data())
def test_evaluate_command(pt18, tmp_path_factory, capsys, data):
    """``kpdiff evaluate`` with a damaged ground truth or prediction file: exit 0 with a table
    only when both readers accept the files, else exit 2 with one line naming the file."""
    from kpdiff.cli import main

    root = tmp_path_factory.mktemp("cmd")
    good = json.dumps(pt18).encode()
    damaged_side = data.draw(st.sampled_from(["gt", "pred"]))
    raw, _ = data.draw(damaged(pt18))
    for side in ("gt", "pred"):
        _write(root / side, "000001_mpii_test.json", raw if side == damaged_side else good)
    path = root / damaged_side / "000001_mpii_test.json"
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["evaluate", "--gt", str(root / "gt"), "--pred", str(root / "pred")])
    err = capsys.readouterr().err
    if code == 0:
        TOTALS["kpdiff evaluate", "accepted"] += 1
        read_posetrack(path, predictions=damaged_side == "pred")  # the reader agrees
    else:
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        TOTALS["kpdiff evaluate", "exit 2, one line"] += 1


# --------------------------------------------------------------------------------- box files


DCPOSE = [
    {"image_name": "images/val/000001_mpii_test/000000.jpg", "bbox": [10, 20, 30, 40],
     "score": 0.9},
    {"image_name": "images/val/000001_mpii_test/000001.jpg", "bbox": [1.5, 2, 3, 4],
     "score": 0.1},
]  # fmt: skip
COCO_BOXES = [
    {"image_id": 0, "bbox": [10, 20, 30, 40], "score": 0.9, "category_id": 1},
    {"image_id": 1, "bbox": [1.5, 2, 3, 4], "score": 0.3, "category_id": 2},
]


@pytest.mark.parametrize("layout", ["dcpose", "coco"])
@FUZZ
@given(st.data())
def test_box_files(tmp_path_factory, layout, data):
    raw, _ = data.draw(damaged(DCPOSE if layout == "dcpose" else COCO_BOXES))
    path = _write(tmp_path_factory.mktemp("b"), "boxes.json", raw)
    boxes = attempt(f"boxes ({layout})", path, lambda: read_detections(path))
    if boxes is not None:
        for key, b in boxes.items():
            assert isinstance(key, str | int) and not isinstance(key, bool)
            assert b.shape[1:] == (5,) and len(b) and np.isfinite(b).all()
            assert (b[:, 2:4] >= 0).all() and (b[:, 4] >= 0.2).all()


# ------------------------------------------------------------------------ experiment configs


@FUZZ
@given(st.data())
def test_experiment_configs(tmp_path_factory, data):
    from kpdiff.engine.config import ExperimentConfig, check_config, load_config

    base = yaml.safe_load(
        (Path(__file__).resolve().parents[1] / "examples" / "diffpose" / "configs"
         / "synthetic_cpu.yaml").read_text()
    )  # fmt: skip
    raw, _ = data.draw(damaged(base, "yaml"))
    path = _write(tmp_path_factory.mktemp("c"), "experiment.yaml", raw)
    config = attempt("experiment YAML", path, lambda: load_config(path))
    if config is not None:
        assert isinstance(config, ExperimentConfig)
        check_config(config)  # what load_config accepts, train accepts
        for value in (config.optim.lr, config.optim.weight_decay, config.optim.min_lr_ratio):
            assert math.isfinite(value)


# ------------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    import torch

    from kpdiff.diffpose import DiffPose

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("pretrained")
    DiffPose.from_preset("diffpose-tiny").save_pretrained(folder)
    return folder


@FUZZ
@given(st.data())
def test_model_config_json(pretrained, tmp_path_factory, data):
    import shutil

    from kpdiff.diffpose import DiffPose

    folder = tmp_path_factory.mktemp("m") / "model"
    shutil.copytree(pretrained, folder)
    raw, _ = data.draw(damaged(json.loads((pretrained / "config.json").read_text())))
    (folder / "config.json").write_bytes(raw)
    model = attempt("checkpoint config.json", folder / "config.json",
                    lambda: DiffPose.from_pretrained(folder))  # fmt: skip
    if model is not None:  # a config that builds and fits the weights: the same model
        reference = DiffPose.from_pretrained(pretrained).state_dict()
        assert all(
            np.array_equal(v.numpy(), reference[k].numpy()) for k, v in model.state_dict().items()
        )


@pytest.fixture(scope="module")
def training_state(tmp_path_factory) -> Path:
    import torch

    from kpdiff.engine.checkpoint import get_rng_state, save_checkpoint
    from kpdiff.engine.config import ExperimentConfig

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    out = tmp_path_factory.mktemp("state")
    return save_checkpoint(
        out, model=model, optimizer=opt, scheduler=sched, config=ExperimentConfig(),
        counters={"step": 1, "epoch": 0, "batch_in_epoch": 1, "best": None},
        rng_states=[get_rng_state()],
    )  # fmt: skip


@FUZZ
@given(st.data())
def test_training_state_json(training_state, tmp_path_factory, data):
    import shutil

    from kpdiff.engine.checkpoint import STATE_JSON_NAME, load_training_state

    folder = tmp_path_factory.mktemp("s") / "step"
    shutil.copytree(training_state, folder)
    doc = json.loads((training_state / STATE_JSON_NAME).read_text())
    raw, _ = data.draw(damaged(doc))
    (folder / STATE_JSON_NAME).write_bytes(raw)
    state = attempt("training_state.json", folder / STATE_JSON_NAME,
                    lambda: load_training_state(folder))  # fmt: skip
    if state is not None:
        assert {"optimizer", "scheduler", "counters", "rng"} <= set(state)
        assert isinstance(state["counters"]["step"], int) and state["counters"]["step"] >= 0
