"""Checkpoints that cannot run code and damaged run folders: the training state is JSON +
safetensors (an old pickle is refused and never unpickled), every damaged file is a one-line
error naming it, and what a killed write left behind is removed when a run starts."""

from __future__ import annotations

import json
import os
import pickle
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kpdiff.diffpose import DiffPose
from kpdiff.engine.checkpoint import (
    LEGACY_STATE_NAME,
    STATE_JSON_NAME,
    STATE_TENSORS_NAME,
    decode_state,
    encode_state,
    get_rng_state,
    latest_checkpoint,
    load_training_state,
    remove_leftovers,
    save_model,
)
from kpdiff.engine.train import train
from kpdiff.errors import KpdiffInputError


@pytest.fixture(scope="module")
def one_step_run(tiny_data, tiny_datasets, tmp_path_factory):
    """A run folder with one complete checkpoint (step 1)."""
    from engine_helpers import tiny_experiment

    run = tmp_path_factory.mktemp("ckpt") / "run"
    cfg = tiny_experiment(tiny_data, run)
    cfg.optim.max_steps = 1
    train(cfg, datasets=tiny_datasets)
    return cfg, latest_checkpoint(run)


def copy_run(one_step_run, tmp_path: Path):
    import copy
    import shutil

    cfg, ckpt = one_step_run
    run = tmp_path / "run"
    shutil.copytree(Path(cfg.runtime.output_dir), run)
    cfg = copy.deepcopy(cfg)
    cfg.runtime.output_dir = str(run)
    return cfg, run / "checkpoints" / ckpt.name


def one_line_error(err: pytest.ExceptionInfo, *names: str) -> str:
    message = str(err.value)
    assert "\n" not in message
    for name in names:
        assert name in message, (name, message)
    return message


# -------------------------------------------------------------------------- no code executed


class _Planted:
    """Unpickling this creates a file: the proof that a pickle ran code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_planted_pickle_is_refused_and_never_unpickled(one_step_run, tmp_path, tiny_datasets):
    cfg, ckpt = copy_run(one_step_run, tmp_path)
    marker = tmp_path / "code-ran"
    # An older kpdiff layout, or someone's planted file: training_state.pt only.
    (ckpt / STATE_JSON_NAME).unlink()
    (ckpt / STATE_TENSORS_NAME).unlink()
    with (ckpt / LEGACY_STATE_NAME).open("wb") as f:
        pickle.dump({"optimizer": _Planted(str(marker))}, f)
    with pytest.raises(KpdiffInputError) as err:
        train(cfg, resume=True, datasets=tiny_datasets)
    one_line_error(err, LEGACY_STATE_NAME, "pickle")
    with pytest.raises(KpdiffInputError):
        load_training_state(ckpt)
    assert not marker.exists()


def test_a_pickle_beside_a_valid_state_is_ignored(one_step_run, tmp_path, tiny_datasets):
    cfg, ckpt = copy_run(one_step_run, tmp_path)
    marker = tmp_path / "code-ran"
    with (ckpt / LEGACY_STATE_NAME).open("wb") as f:
        pickle.dump(_Planted(str(marker)), f)
    cfg.optim.max_steps = 2
    result = train(cfg, resume=True, datasets=tiny_datasets)
    assert result.steps == 2 and not marker.exists()


def test_the_training_state_is_only_json_and_safetensors(one_step_run):
    _, ckpt = one_step_run
    document = json.loads((ckpt / STATE_JSON_NAME).read_text())
    assert document["format"] == "kpdiff-training-state" and document["version"] == 1
    from safetensors import safe_open

    with safe_open(str(ckpt / STATE_TENSORS_NAME), "pt") as f:
        assert len(list(f.keys())) > 0
    state = load_training_state(ckpt)
    assert state["counters"]["step"] == 1
    assert state["rng"] is state["rng_per_rank"][0]


# ------------------------------------------------------------------ exact state round trip


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, float) and a != a:
        return isinstance(b, float) and b != b
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_rng_states_round_trip_exactly():
    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    state = get_rng_state()
    document, tensors = encode_state(state)
    json.dumps(document, allow_nan=False)  # plain JSON
    assert _equal(decode_state(json.loads(json.dumps(document)), tensors), state)


def test_optimizer_state_round_trips_exactly():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = opt.state_dict()
    document, tensors = encode_state(state)
    back = decode_state(json.loads(json.dumps(document)), tensors)
    assert _equal(back, state)
    fresh = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=1e-3)
    fresh.load_state_dict(back)


_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.builds(lambda n: torch.arange(n, dtype=torch.float32), st.integers(0, 4)),
    st.builds(lambda n: np.arange(n, dtype=np.uint32), st.integers(0, 4)),
)
_key = st.one_of(st.text(max_size=4), st.integers(-3, 3), st.tuples(st.integers(0, 2)))
_states = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(_key, inner, max_size=3),
        st.dictionaries(st.text(max_size=3), st.integers(0, 9), max_size=3).map(Counter),
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(_states)
def test_any_state_round_trips_exactly(state):
    document, tensors = encode_state(state)
    text = json.dumps(document, allow_nan=False)
    assert _equal(decode_state(json.loads(text), tensors), state)


def test_unknown_types_are_refused_not_pickled():
    with pytest.raises(TypeError, match="set"):
        encode_state({"a": {1, 2}})
    with pytest.raises(TypeError, match="float"):
        encode_state({"a": np.zeros(2)})


# -------------------------------------------------------------------- damaged run folders


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda c: (c / STATE_JSON_NAME).write_text('{"format": "kpd'), id="cut-json"),
        pytest.param(lambda c: (c / STATE_JSON_NAME).write_bytes(b"\xff\xfe{}"), id="not-utf8"),
        pytest.param(lambda c: (c / STATE_JSON_NAME).write_text("[1, 2]"), id="json-list"),
        pytest.param(lambda c: (c / STATE_JSON_NAME).write_text("[" * 100_000), id="deep"),
        pytest.param(
            lambda c: (c / STATE_JSON_NAME).write_text(
                (c / STATE_JSON_NAME).read_text().replace('"version":1', '"version":7')
            ),
            id="version",
        ),
        pytest.param(
            lambda c: (c / STATE_JSON_NAME).write_text(
                (c / STATE_JSON_NAME).read_text().replace('"step":1', '"step":-1')
            ),
            id="negative-step",
        ),
        pytest.param(
            lambda c: (c / STATE_JSON_NAME).write_text(
                (c / STATE_JSON_NAME).read_text().replace('"__tensor__":"', '"__tensor__":"x')
            ),
            id="missing-tensor",
        ),
        pytest.param(lambda c: (c / STATE_TENSORS_NAME).write_bytes(b""), id="empty-tensors"),
        pytest.param(
            lambda c: (c / STATE_TENSORS_NAME).write_bytes(
                (c / STATE_TENSORS_NAME).read_bytes()[:100]
            ),
            id="cut-tensors",
        ),
        pytest.param(lambda c: (c / STATE_TENSORS_NAME).unlink(), id="no-tensors"),
    ],
)
def test_a_damaged_training_state_is_a_one_line_error(one_step_run, tmp_path, damage):
    _, ckpt = copy_run(one_step_run, tmp_path)
    damage(ckpt)
    with pytest.raises(KpdiffInputError) as err:
        load_training_state(ckpt)
    one_line_error(err, str(ckpt))


def _random_bytes(n: int) -> bytes:
    return np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8).tobytes()


@pytest.mark.parametrize(
    ("damage", "names"),
    [
        (lambda c: (c / "model.safetensors").write_bytes(b""), ["model.safetensors"]),
        (
            lambda c: (c / "model.safetensors").write_bytes(
                (c / "model.safetensors").read_bytes()[:5000]
            ),
            ["model.safetensors"],
        ),
        (lambda c: (c / "model.safetensors").write_bytes(_random_bytes(4096)), ["safetensors"]),
        (lambda c: (c / "config.json").write_text("[1, 2]"), ["config.json", "list"]),
        (lambda c: (c / "config.json").write_bytes(b"\xff\xfe\x00"), ["config.json", "UTF-8"]),
        (lambda c: (c / "config.json").write_text('{"dim": "64"}'), ["config.json", "dim"]),
        (lambda c: (c / "config.json").write_text('{"dim": 0}'), ["config.json", "dim"]),
        (lambda c: (c / "config.json").write_text('{"encoder_heads": 0}'), ["encoder_heads"]),
        (lambda c: (c / "config.json").write_text('{"dimm": 64}'), ["config.json", "dimm"]),
        (lambda c: (c / "config.json").write_text('{"dim": 6'), ["config.json", "JSON"]),
    ],
)
def test_damaged_weights_or_config_are_one_line_errors(one_step_run, tmp_path, damage, names):
    _, ckpt = copy_run(one_step_run, tmp_path)
    damage(ckpt)
    with pytest.raises(KpdiffInputError) as err:
        DiffPose.from_pretrained(ckpt)
    one_line_error(err, *names)


def test_nan_weights_planted_in_a_checkpoint_are_named(one_step_run, tmp_path):
    from safetensors.torch import load_file, save_file

    _, ckpt = copy_run(one_step_run, tmp_path)
    tensors = load_file(str(ckpt / "model.safetensors"))
    name = sorted(tensors)[0]
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, str(ckpt / "model.safetensors"))
    with pytest.raises(KpdiffInputError) as err:
        DiffPose.from_pretrained(ckpt)
    one_line_error(err, "model.safetensors", name, "NaN")


@pytest.mark.parametrize("text", ["", "../../etc\n", "step-0000001/../..", "\xff"])
def test_a_bad_latest_pointer_is_a_one_line_error(one_step_run, tmp_path, text):
    cfg, _ = copy_run(one_step_run, tmp_path)
    pointer = Path(cfg.runtime.output_dir) / "checkpoints" / "latest"
    pointer.write_text(text, encoding="latin-1")
    with pytest.raises(KpdiffInputError) as err:
        latest_checkpoint(cfg.runtime.output_dir)
    one_line_error(err, "latest")


def test_output_dir_that_is_a_file_is_named(make_config, tmp_path):
    cfg = make_config()
    Path(cfg.runtime.output_dir).parent.mkdir(parents=True, exist_ok=True)
    Path(cfg.runtime.output_dir).write_text("not a folder")
    with pytest.raises(KpdiffInputError) as err:
        train(cfg)
    one_line_error(err, "runtime.output_dir")


# ------------------------------------------------------------ leftovers of killed writes


def test_leftovers_of_killed_writes_are_removed_and_the_rest_kept(one_step_run, tmp_path):
    cfg, ckpt = copy_run(one_step_run, tmp_path)
    run = Path(cfg.runtime.output_dir)
    leftovers = [
        run / ".metrics.0123456789ab.tmp.jsonl",
        run / "checkpoints" / ".latest.0123456789ab.tmp",
        run / "checkpoints" / ".tmp-abc123" / "model.safetensors",
        run / ".best.tmp-xyz" / "config.json",
        run / "best" / ".model.0123456789ab.tmp.safetensors",
    ]
    kept = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("half")
    (run / "notes.tmp").write_text("the user's file")  # not an atomic_path name: kept
    remove_leftovers(run)
    after = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    assert after == sorted([*kept, "notes.tmp"])
    assert not (run / "checkpoints" / ".tmp-abc123").exists()
    assert not (run / ".best.tmp-xyz").exists()
    assert latest_checkpoint(run) == ckpt


def test_an_empty_best_folder_is_removed(tmp_path):
    (tmp_path / "best").mkdir()
    remove_leftovers(tmp_path)
    assert not (tmp_path / "best").exists()


def test_a_first_save_model_leaves_no_folder_when_it_fails(tmp_path):
    class Broken(torch.nn.Module):
        def save_pretrained(self, directory):
            (Path(directory) / "config.json").write_text("{}")
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        save_model(Broken(), tmp_path / "best")
    assert list(tmp_path.iterdir()) == []


def test_saved_files_follow_the_umask(one_step_run):
    _, ckpt = one_step_run
    mask = os.umask(0o022)
    os.umask(mask)
    for name in ("model.safetensors", "config.json", STATE_JSON_NAME, STATE_TENSORS_NAME):
        assert (ckpt / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


def test_metrics_log_is_strict_json(tmp_path):
    from kpdiff.engine.train_log import MetricsLog

    log = MetricsLog(tmp_path / "m.jsonl", enabled=True)
    log.write(step=1, loss=float("nan"), val={"Mean": float("inf"), "x": [1.0, float("-inf")]})
    record = json.loads(
        log.path.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}")
    )
    assert record["loss"] is None and record["val"] == {"Mean": None, "x": [1.0, None]}
