"""Optional training-log sinks beside ``metrics.jsonl``: TensorBoard and Weights & Biases.

They get the records training writes to ``metrics.jsonl`` (rank 0 only) and log them as
scalars, at the record's ``step``:

    train/loss, train/lr, train/samples_per_s, train/grad_norm     every runtime.log_every steps
    val/ap_<column> (val/ap_Head … val/ap_Mean), val/best_ap,
    val/ap_N<N>_steps<S> (the Mean AP of each validated N × steps point), val/eval_seconds

``runtime.tensorboard: true`` writes event files into ``output_dir/tensorboard``;
``runtime.wandb: true`` logs to the W&B project ``runtime.wandb_project``. Each package is
imported only when its sink is enabled.
"""

from __future__ import annotations

import importlib.util
import math
import re
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from kpdiff.errors import KpdiffInputError
from kpdiff.io import write_text_atomic

__all__ = [
    "MetricSink",
    "TensorBoardSink",
    "WandbSink",
    "check_sinks",
    "open_sinks",
    "record_scalars",
]

TENSORBOARD_DIR = "tensorboard"
WANDB_ID_NAME = "wandb_run_id"  # in output_dir: a resumed run continues the same W&B run
_TRAIN = {"loss": "train/loss", "lr": "train/lr", "samples_per_s": "train/samples_per_s",
          "grad_norm": "train/grad_norm"}  # fmt: skip
_VAL = {"best": "val/best_ap", "eval_seconds": "val/eval_seconds"}


class MetricSink(Protocol):
    """Where training records go besides ``metrics.jsonl``."""

    def write(self, record: Mapping[str, Any]) -> None:
        """Log one record (a ``metrics.jsonl`` object with its ``step``)."""

    def close(self) -> None:
        """Flush and release."""


def _tag(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("_") or "_"


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def record_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The scalars of a ``metrics.jsonl`` record, by name (see the module doc); values that
    are missing, ``None`` or not finite are left out."""
    out: dict[str, float] = {}
    for key, name in {**_TRAIN, **_VAL}.items():
        if _finite(record.get(key)):
            out[name] = float(record[key])
    for column, value in (record.get("val_columns") or {}).items():
        if _finite(value):
            out[f"val/ap_{_tag(column)}"] = float(value)
    for point, value in (record.get("val_grid") or {}).items():
        if _finite(value):
            out[f"val/ap_{_tag(point)}"] = float(value)
    return out


class TensorBoardSink:
    """Scalars into TensorBoard event files (``torch.utils.tensorboard.SummaryWriter``).

    Args:
        log_dir: the event files' folder (``output_dir/tensorboard`` in training).
        purge_step: a resumed run's first new step: TensorBoard hides the events of the
            earlier run at this step and after (they are logged again). Default ``None``.

    Raises:
        KpdiffInputError: the ``tensorboard`` package is not installed.
    """

    def __init__(self, log_dir: str | Path, *, purge_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise KpdiffInputError(
                "runtime.tensorboard: true needs the tensorboard package: pip install tensorboard"
            ) from None
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge_step)

    def write(self, record: Mapping[str, Any]) -> None:
        step = int(record["step"])
        for name, value in record_scalars(record).items():
            self.writer.add_scalar(name, value, global_step=step)
        self.writer.flush()  # a killed run keeps what it logged

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """Scalars into a Weights & Biases run (``wandb.init`` / ``wandb.log``).

    The run id is kept in ``output_dir/wandb_run_id``: a resumed training run continues the
    same W&B run, a fresh one starts a new run. The steps a resumed run replays (after its
    checkpoint) are logged again; W&B ignores values logged at a step below the run's latest.

    Args:
        output_dir: the training run's folder (W&B's local files go to ``output_dir/wandb``).
        project: the W&B project. Default ``"kpdiff"``.
        config: the experiment, shown in W&B (``ExperimentConfig.to_dict()``). Default none.
        resume: continue the run whose id ``output_dir`` holds. Default ``False``.

    Raises:
        KpdiffInputError: the ``wandb`` package is not installed.
    """

    def __init__(
        self,
        output_dir: str | Path,
        *,
        project: str = "kpdiff",
        config: Mapping[str, Any] | None = None,
        resume: bool = False,
    ) -> None:
        try:
            import wandb
        except ImportError:
            raise KpdiffInputError(
                "runtime.wandb: true needs the wandb package: pip install wandb"
            ) from None
        out = Path(output_dir)
        id_file = out / WANDB_ID_NAME
        run_id = id_file.read_text(encoding="utf-8").strip() if resume and id_file.is_file() else ""
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", run_id):
            run_id = secrets.token_hex(8)
            write_text_atomic(id_file, run_id + "\n")
        (out / "wandb").mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=project, name=out.name, id=run_id, resume="allow", dir=str(out),
            config=dict(config or {}),
        )  # fmt: skip

    def write(self, record: Mapping[str, Any]) -> None:
        scalars = record_scalars(record)
        if scalars:
            self.run.log(scalars, step=int(record["step"]))

    def close(self) -> None:
        self.run.finish()


_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}  # runtime field: package


def check_sinks(config: Any) -> None:
    """Raise now, before any training, when an enabled sink's package is not installed.

    Raises:
        KpdiffInputError: ``runtime.<sink>: true needs the <package> package: pip install …``.
    """
    for field, package in _PACKAGES.items():
        if getattr(config.runtime, field) and not _installed(package):
            raise KpdiffInputError(
                f"runtime.{field}: true needs the {package} package: pip install {package}"
            )


def _installed(package: str) -> bool:
    if package in sys.modules:  # imported already, or blocked (None)
        return sys.modules[package] is not None
    return importlib.util.find_spec(package) is not None


def open_sinks(config: Any, *, resume_step: int | None = None) -> list[MetricSink]:
    """The sinks ``config.runtime`` enables (an :class:`~kpdiff.engine.ExperimentConfig`),
    writing for ``config.runtime.output_dir``; call it on rank 0 only.

    Args:
        config: the experiment.
        resume_step: the step a resumed run continues from (``None``: a fresh run).
    """
    runtime = config.runtime
    out = Path(runtime.output_dir)
    sinks: list[MetricSink] = []
    if runtime.tensorboard:
        purge = None if resume_step is None else resume_step + 1
        sinks.append(TensorBoardSink(out / TENSORBOARD_DIR, purge_step=purge))
    if runtime.wandb:
        sinks.append(
            WandbSink(
                out, project=runtime.wandb_project, config=config.to_dict(),
                resume=resume_step is not None,
            )
        )  # fmt: skip
    return sinks
