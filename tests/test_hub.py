"""Hub ids: from_pretrained("org/name") from an offline Hugging Face cache, save_pretrained with a
model card and push_to_hub (the Hub API recorded, never called), and one-line errors."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import huggingface_hub
import pytest
import torch
from model_helpers import MICRO

import kpdiff
from kpdiff.data.synthetic import SyntheticConfig
from kpdiff.diffpose import DiffPose
from kpdiff.engine.config import ExperimentConfig, save_config
from kpdiff.errors import KpdiffInputError
from kpdiff.hub import ModelCard, is_repo_id

COMMIT, OTHER = "a" * 40, "b" * 40


def add_to_cache(cache: Path, repo_id: str, folder: Path, commit: str, refs: tuple = ()) -> Path:
    """Lay ``folder``'s files out as the Hub cache does (huggingface_hub's "Manage the cache"
    guide): ``models--org--name/blobs/<hash>``, ``snapshots/<commit>/<file>`` symlinks to the
    blobs, ``refs/<ref>`` holding the commit."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for file in sorted(folder.iterdir()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    for ref in refs:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE=1, a working folder where "org/name" is no path, and a Hub API that fails
    the test if it is called."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)

    def no_network(*args, **kwargs):
        raise AssertionError("the Hub API was called in offline mode")

    for name in ("repo_info", "model_info", "list_repo_tree", "create_repo", "upload_folder"):
        monkeypatch.setattr(huggingface_hub.HfApi, name, no_network)
    return tmp_path / "hub-cache"


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_hub_id_loads_from_an_offline_cache(offline, tmp_path):
    torch.manual_seed(0)
    model = DiffPose(MICRO)
    model.save_pretrained(tmp_path / "main", model_card=ModelCard(training_data="synthetic"))
    torch.manual_seed(1)
    other = DiffPose(MICRO, lookup="none")
    other.save_pretrained(tmp_path / "v1")
    add_to_cache(offline, "org/name", tmp_path / "main", COMMIT, refs=("main",))
    add_to_cache(offline, "org/name", tmp_path / "v1", OTHER, refs=("v1",))
    # huggingface_hub itself reads the layout: one repo, two revisions, their files
    (repo,) = huggingface_hub.scan_cache_dir(offline).repos
    assert repo.repo_id == "org/name"
    assert {r.commit_hash: sorted(f.file_name for f in r.files) for r in repo.revisions} == {
        COMMIT: ["README.md", "config.json", "model.safetensors"],
        OTHER: ["config.json", "model.safetensors"],
    }

    loaded = DiffPose.from_pretrained("org/name", cache_dir=offline)
    assert loaded.config == model.config and same_weights(loaded, model)
    for revision in ("v1", OTHER):  # a ref, or the commit itself
        again = DiffPose.from_pretrained("org/name", cache_dir=offline, revision=revision)
        assert again.config.lookup == "none" and same_weights(again, other)
    assert not same_weights(loaded, DiffPose(MICRO))  # the comparison can fail


def test_missing_hub_id_offline_is_one_line_naming_it_and_the_cache(offline, monkeypatch):
    with pytest.raises(KpdiffInputError) as err:
        DiffPose.from_pretrained("org/missing", cache_dir=offline)
    message = str(err.value)
    assert "\n" not in message
    assert "'org/missing' is neither a folder nor in the Hugging Face cache" in message
    assert str(offline.resolve()) in message or str(offline) in message
    assert "HF_HUB_OFFLINE=1" in message
    monkeypatch.delenv("HF_HUB_OFFLINE")  # local_files_only alone keeps it offline too
    with pytest.raises(KpdiffInputError, match="'org/missing' at revision 'v2' is neither"):
        DiffPose.from_pretrained(
            "org/missing", cache_dir=offline, revision="v2", local_files_only=True
        )


def test_paths_stay_local_folders(offline, tmp_path):
    torch.manual_seed(0)
    model = DiffPose(MICRO)
    model.save_pretrained(tmp_path / "org" / "name")  # a folder that looks like an id wins
    assert same_weights(DiffPose.from_pretrained("org/name"), model)
    with pytest.raises(KpdiffInputError, match="revision is for a Hub id"):
        DiffPose.from_pretrained("org/name", revision="main")
    with pytest.raises(KpdiffInputError, match=r"config\.json does not exist"):
        DiffPose.from_pretrained(tmp_path / "nope")  # a Path is never a Hub id
    with pytest.raises(KpdiffInputError, match=r"config\.json does not exist"):
        DiffPose.from_pretrained("./runs/best")
    assert is_repo_id("org/name") and is_repo_id("Org-1/name_2.v3")
    for text in ("name", "a/b/c", "./a", "/abs/path", "org/na--me", "org/..", "org/name/"):
        assert not is_repo_id(text), text


class RecordingApi:
    """``HfApi.create_repo`` / ``upload_folder`` stand-ins that record their calls and the
    uploaded files."""

    def __init__(self, monkeypatch, uploads: Path) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.uploads = uploads
        api = self

        def create_repo(self, repo_id, **kwargs):
            api.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

        def upload_folder(self, **kwargs):
            api.calls.append(("upload_folder", kwargs))
            folder = Path(kwargs["folder_path"])
            for file in folder.iterdir():
                keep = any(file.match(p) for p in kwargs["allow_patterns"])
                if keep:
                    (api.uploads / file.name).write_bytes(file.read_bytes())
            return type("CommitInfo", (), {"commit_url": "https://hub.test/org/name/commit/1"})

        monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
        monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)


def test_push_to_hub_uploads_the_folder_with_a_card_and_loads_back(offline, tmp_path, monkeypatch):
    uploads = tmp_path / "uploaded"
    uploads.mkdir()
    api = RecordingApi(monkeypatch, uploads)
    torch.manual_seed(0)
    model = DiffPose(MICRO, schema="posetrack")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("not for the Hub")
    url = model.save_pretrained(out, push_to_hub=True, repo_id="org/name", private=True)
    assert url == "https://hub.test/org/name/commit/1"
    (create, created), (upload, uploaded) = api.calls
    assert create == "create_repo" and created["repo_id"] == "org/name"
    assert created["private"] is True and created["exist_ok"] is True
    assert upload == "upload_folder" and uploaded["repo_id"] == "org/name"
    assert Path(uploaded["folder_path"]) == out
    assert sorted(p.name for p in uploads.iterdir()) == [
        "README.md", "config.json", "model.safetensors",
    ]  # fmt: skip

    card = huggingface_hub.ModelCard((out / "README.md").read_text())  # the Hub's own parser
    assert card.data.library_name == "kpdiff"
    assert {"pose-estimation", "keypoint-detection", "diffusion"} <= set(card.data.tags)
    assert "## Training data\n\nNot recorded." in card.text
    assert "\nNot measured.\n" in card.text
    assert f"Written by kpdiff {kpdiff.__version__}." in card.text
    assert 'DiffPose.from_pretrained("org/name")' in card.text

    add_to_cache(offline, "org/name", uploads, COMMIT, refs=("main",))  # what a download gives
    assert same_weights(DiffPose.from_pretrained("org/name", cache_dir=offline), model)


def test_push_to_hub_refuses_a_bad_repo_id_before_writing(offline, tmp_path, monkeypatch):
    api = RecordingApi(monkeypatch, tmp_path)
    model = DiffPose(MICRO)
    for repo_id in (None, "name", "a/b/c"):
        with pytest.raises(KpdiffInputError, match="repo_id: expected a Hub id 'org/name'"):
            model.save_pretrained(tmp_path / "x", push_to_hub=True, repo_id=repo_id)
    with pytest.raises(KpdiffInputError, match=r"model_card: expected a kpdiff\.hub\.ModelCard"):
        model.save_pretrained(tmp_path / "x", model_card={"ap": 1})
    assert api.calls == [] and not (tmp_path / "x").exists()
    model.save_pretrained(tmp_path / "plain")  # a local save writes no card
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    model.save_pretrained(tmp_path / "text", model_card="---\nlibrary_name: kpdiff\n---\nmine")
    assert (tmp_path / "text" / "README.md").read_text().endswith("mine")


def test_model_card_from_a_run_has_its_data_and_best_ap(tmp_path):
    run = tmp_path / "run"
    config = ExperimentConfig()
    config.data.synthetic = SyntheticConfig(num_videos=7, frames_per_video=9)
    config.eval.num_samples, config.eval.steps = 5, 2
    save_config(config, run / "experiment.yaml")
    assert ModelCard.from_run(run).ap is None  # never validated: "not measured"
    columns = [{"Head": 40.0, "Mean": 35.0}, {"Head": 61.25, "Mean": 55.0}, {"Mean": 50.0}]
    lines = [{"step": 1, "loss": 0.1}]
    lines += [
        {"step": 10 * (i + 1), "val_mean_ap": c["Mean"], "val_columns": c}
        for i, c in enumerate(columns)
    ]
    text = "\n".join(json.dumps(r) for r in lines) + '\n{"step": 40, "val_mea'  # cut by a kill
    (run / "metrics.jsonl").write_text(text)
    card = ModelCard.from_run(run)
    assert card.ap == {"Head": 61.25, "Mean": 55.0}
    assert card.evaluation.startswith("the validation split `val` at training step 20, ")
    assert "N = 5, 2 DDIM steps, ground-truth boxes" in card.evaluation
    assert "7 training videos × 9 frames" in card.training_data
    torch.manual_seed(0)
    DiffPose(MICRO).save_pretrained(tmp_path / "m", model_card=card)
    readme = (tmp_path / "m" / "README.md").read_text()
    assert "| Head | Mean |" in readme and "| 61.2 | 55.0 |" in readme
    assert "Not measured." not in readme
    with pytest.raises(KpdiffInputError, match=r"experiment\.yaml: config file not found"):
        ModelCard.from_run(tmp_path / "nothing")
    config.data.synthetic, config.data.root = False, "data/posetrack18"
    save_config(config, run / "experiment.yaml")
    assert ModelCard.from_run(run).training_data == (
        "the dataset at `data/posetrack18` (schema `posetrack`), split `train`."
    )
    # datasets given to train(): the card says what experiment.yaml recorded of them
    config.data.custom = {"schema": "quadruped", "train": {"class": "my.Clips", "clips": 123}}
    save_config(config, run / "experiment.yaml")
    training = ModelCard.from_run(run).training_data
    assert "schema `quadruped`" in training and "123 training clips of my.Clips" in training
