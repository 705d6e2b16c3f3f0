"""Hugging Face Hub ids for ``from_pretrained`` / ``save_pretrained``, and the model card.

A Hub repository holds exactly what :meth:`~kpdiff.DiffPose.save_pretrained` writes into a
folder (``config.json`` + ``model.safetensors``) plus a ``README.md`` model card::

    model.save_pretrained("out/tiny", push_to_hub=True, repo_id="org/name",
                          model_card=ModelCard.from_run("runs/demo"))
    model = DiffPose.from_pretrained("org/name")  # downloaded once into the Hub cache

A string that is an existing path is always a local folder; any other ``"org/name"`` string is
a Hub id, resolved by ``huggingface_hub.snapshot_download`` (which caches under
``~/.cache/huggingface/hub`` or ``cache_dir``, and reads only the cache when ``HF_HUB_OFFLINE=1``
or ``local_files_only=True``). ``huggingface_hub`` is imported only when an id is resolved or a
folder is pushed.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kpdiff.errors import KpdiffInputError

if TYPE_CHECKING:
    from kpdiff.diffpose_config import DiffPoseConfig

__all__ = [
    "CARD_NAME",
    "ModelCard",
    "hub_offline",
    "is_repo_id",
    "push_folder",
    "render_model_card",
    "resolve_pretrained",
]

CONFIG_NAME, WEIGHTS_NAME, CARD_NAME = "config.json", "model.safetensors", "README.md"
"""The files of a ``save_pretrained`` folder: the config, the weights and the model card."""
_FILES = (CONFIG_NAME, WEIGHTS_NAME)  # what from_pretrained reads
# "org/name": letters, digits, "-", "_", "."; no "--" or ".." (the Hub's own rules), no "./".
_PART = r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
_REPO_ID = re.compile(rf"{_PART}/{_PART}")
_TRUE = ("1", "on", "yes", "true")


def is_repo_id(text: str) -> bool:
    """Whether ``text`` has the form of a Hub model id, ``"org/name"`` (one slash)."""
    return bool(_REPO_ID.fullmatch(text)) and "--" not in text and ".." not in text


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (read now, so a value set after import counts too) or
    ``huggingface_hub``'s own offline switch."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def resolve_pretrained(
    source: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> Path:
    """The local folder of ``source``: itself when it is a path, else a Hub snapshot.

    Args:
        source: a folder (any ``os.PathLike``, or a string naming an existing path), or a Hub
            id ``"org/name"`` (a string that is not an existing path).
        revision: branch, tag or commit of a Hub id. Default ``None`` (``main``).
        cache_dir: the Hub cache to read and fill. Default ``None``: ``HF_HUB_CACHE``
            (``~/.cache/huggingface/hub``).
        local_files_only: read only the cache, never the network; ``HF_HUB_OFFLINE=1`` does
            the same. Default ``False``.
        token: Hub token for private or gated repositories (``None``: the login's).

    Raises:
        KpdiffInputError: one line naming ``source``: a Hub id that is neither a folder nor in
            the cache (offline), an unknown repository or revision, an unreachable Hub, or a
            ``revision`` given with a local path (``cache_dir``, ``local_files_only`` and
            ``token`` are ignored for one).
    """
    path = Path(source)
    if not isinstance(source, str) or path.exists() or not is_repo_id(source):
        if revision is not None:  # ignoring it would load another version than asked for
            raise KpdiffInputError(
                f"from_pretrained: revision is for a Hub id ('org/name'), but {str(source)!r} is "
                f"a local path"
            )
        return path
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.utils import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = bool(local_files_only) or hub_offline()
    cache = Path(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE).expanduser()
    at = f" at revision {revision!r}" if revision else ""
    try:
        folder = snapshot_download(
            source, revision=revision, cache_dir=cache, local_files_only=offline, token=token,
            allow_patterns=list(_FILES), library_name="kpdiff", library_version=_version(),
        )  # fmt: skip
    except LocalEntryNotFoundError as err:
        if type(err).__name__ == "IncompleteSnapshotError":
            why = "its cached snapshot misses files; download it again online"
        elif offline:
            why = "offline: HF_HUB_OFFLINE=1 or local_files_only=True; download it once online"
        else:
            why = "the Hub could not be reached; check the connection or the path"
        raise KpdiffInputError(
            f"from_pretrained: {source!r}{at} is neither a folder nor in the Hugging Face cache "
            f"{cache} ({why})"
        ) from None
    except RevisionNotFoundError:
        raise KpdiffInputError(
            f"from_pretrained: the Hub repository {source!r} has no revision {revision!r}"
        ) from None
    except RepositoryNotFoundError:  # GatedRepoError too
        raise KpdiffInputError(
            f"from_pretrained: {source!r} is not a folder, and the Hub has no repository of that "
            f"name you can read (a private or gated one needs `hf auth login` or token=)"
        ) from None
    except (HfHubHTTPError, OSError, ValueError) as err:
        detail = " ".join(str(err).split())[:200]
        raise KpdiffInputError(
            f"from_pretrained: {source!r}{at} is not a folder and could not be downloaded from "
            f"the Hub ({type(err).__name__}: {detail})"
        ) from None
    return Path(folder)


def push_folder(
    directory: str | os.PathLike[str],
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | bool | None = None,
    commit_message: str = "Upload kpdiff model",
) -> str:
    """Create ``repo_id`` on the Hub when it does not exist and upload ``config.json``,
    ``model.safetensors`` and ``README.md`` of ``directory`` in one commit.

    Args:
        directory: a folder written by ``save_pretrained``.
        repo_id: ``"org/name"``.
        private: visibility of a repository created now (``None``: the Hub's default). An
            existing repository keeps its visibility.
        token: Hub token (``None``: the one of ``hf auth login``).
        commit_message: the commit's message. Default ``"Upload kpdiff model"``.

    Returns:
        The commit's URL.
    """
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True, token=token)
    info = api.upload_folder(
        repo_id=repo_id, folder_path=str(directory), commit_message=commit_message, token=token,
        allow_patterns=[*_FILES, CARD_NAME],
    )  # fmt: skip
    return str(getattr(info, "commit_url", info))


@dataclass(frozen=True)
class ModelCard:
    """What the generated ``README.md`` says beyond the model's config (all optional).

    Args:
        training_data: what the model was trained on. Default ``None`` ("not recorded").
        ap: PoseTrack AP columns, ``{"Head": …, …, "Mean": …}`` in percent. Default ``None``
            ("not measured").
        evaluation: how ``ap`` was measured (split, N, steps, boxes). Default ``None``.
        description: a paragraph of your own, placed under the title. Default ``None``.
    """

    training_data: str | None = None
    ap: dict[str, float] | None = None
    evaluation: str | None = None
    description: str | None = None

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike[str]) -> ModelCard:
        """The card of a training run's ``best/`` model, from the run's ``experiment.yaml``
        (the data) and ``metrics.jsonl`` (the validation record with the best Mean AP: the
        one ``best/`` was saved at; ``ap`` stays ``None`` when the run never validated).

        Raises:
            KpdiffInputError: ``run_dir/experiment.yaml`` is missing or not an experiment.
        """
        from kpdiff.engine.config import load_config

        run = Path(run_dir)
        config = load_config(run / "experiment.yaml")
        data = config.data
        if data.custom is not None:  # datasets passed to train(): what experiment.yaml recorded
            train = data.custom.get("train") or {}
            training = (
                f"datasets given to kpdiff.engine.train (schema `{data.custom.get('schema')}`): "
                f"{train.get('clips', '?')} training clips of {train.get('class', 'a dataset')}."
            )
        elif data.synthetic is not None:
            train = data.synthetic.size_of(data.train_split)
            val = data.synthetic.size_of(data.val_split)
            training = (
                f"kpdiff's synthetic videos (schema `{data.schema}`, seed {data.synthetic.seed}): "
                f"{train[0]} training videos × {train[1]} frames; "
                f"validation {val[0]} × {val[1]}."
            )
        else:
            where = f"the dataset at `{data.root}` (schema `{data.schema}`)"
            training = f"{where}, split `{data.train_split}`."
        best = _best_validation(run / "metrics.jsonl")
        if best is None:
            return cls(training_data=training)
        boxes = "ground-truth boxes" if data.val_boxes == "gt" else f"boxes `{data.val_boxes}`"
        clips = f", first {config.eval.max_clips} clips" if config.eval.max_clips else ""
        n, steps = config.eval.num_samples, config.eval.steps
        evaluation = (
            f"the validation split `{data.val_split}` at training step {best.get('step')}, "
            f"N = {n}, {steps} DDIM step{'s' if steps != 1 else ''}, {boxes}{clips}"
        )
        ap = {str(k): float(v) for k, v in best["val_columns"].items() if v is not None}
        return cls(training_data=training, ap=ap, evaluation=evaluation)


def _best_validation(path: Path) -> dict[str, Any] | None:
    """The first record with the highest ``val_mean_ap`` (``best/`` is saved only when the AP
    improves), or ``None``."""
    if not path.is_file():
        return None
    best = None
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a line cut short by a kill
            continue
        if not isinstance(record, dict) or not isinstance(record.get("val_columns"), dict):
            continue
        value = record.get("val_mean_ap")
        if isinstance(value, int | float) and (best is None or value > best["val_mean_ap"]):
            best = record
    return best


def render_model_card(
    config: DiffPoseConfig,
    card: ModelCard | None = None,
    *,
    model_class: str = "DiffPose",
    repo_id: str | None = None,
) -> str:
    """The ``README.md`` text: YAML front matter (``library_name: kpdiff``, tags
    ``pose-estimation``, ``keypoint-detection``, ``diffusion``), the model, the training data,
    the measured AP (or "not measured"), the kpdiff version and how to load it."""
    import yaml

    card = card or ModelCard()
    meta = {
        "library_name": "kpdiff",
        "pipeline_tag": "keypoint-detection",
        "tags": ["pose-estimation", "keypoint-detection", "diffusion", "kpdiff"],
    }
    h, w = config.input_size
    schema = f", schema `{config.schema}`" if config.schema else ""
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False).rstrip(),
        "---",
        "",
        f"# {repo_id.split('/')[-1] if repo_id else model_class}",
        "",
        f"A kpdiff `{model_class}`: diffusion over keypoint heatmaps (DiffPose, Feng et al., "
        f"ICCV 2023). Backbone `{config.backbone}`, K = {config.num_keypoints} keypoints"
        f"{schema}, {h}×{w} crops, δ = {config.delta} (clips of {2 * config.delta + 1} frames), "
        f"lookup `{config.lookup}`; predicts with N = {config.num_samples} hypotheses × "
        f"{config.steps} DDIM steps by default.",
        "",
    ]
    if card.description:
        lines += [card.description.strip(), ""]
    lines += ["## Training data", "", card.training_data or "Not recorded.", ""]
    lines += ["## Measured AP (PoseTrack AP, as poseval computes it)", ""]
    if card.ap:
        cols = list(card.ap)
        lines += [
            "| " + " | ".join(cols) + " |",
            "| " + " | ".join("---:" for _ in cols) + " |",
            "| " + " | ".join(f"{card.ap[c]:.1f}" for c in cols) + " |",
            "",
        ]
        if card.evaluation:
            lines += [f"Measured on {card.evaluation}.", ""]
    else:
        lines += ["Not measured.", ""]
    name = repo_id or "ORG/NAME"
    lines += [
        "## Use",
        "",
        "```python",
        f"from kpdiff import {model_class}",
        "",
        f'model = {model_class}.from_pretrained("{name}")',
        "```",
        "",
        f"Written by kpdiff {_version()}.",
        "",
    ]
    return "\n".join(lines)


def _version() -> str:
    import kpdiff

    return kpdiff.__version__
