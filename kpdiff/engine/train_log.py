"""What a training run reports as it goes: the ``metrics.jsonl`` log and the progress bar.

:class:`MetricsLog` appends one strict-JSON record per line (rank 0; resuming drops the records
after the checkpoint) and passes each to the TensorBoard / W&B sinks; :class:`Progress` is the
tqdm bar with loss, lr and samples/s.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from kpdiff.engine.sinks import MetricSink
from kpdiff.io import write_text_atomic

__all__ = ["MetricsLog", "Progress"]


class MetricsLog:
    """JSON lines, one object per record, appended and flushed (rank 0 only).

    Strict JSON: a NaN or infinite value (a diverged loss, an undefined AP) is written as
    ``null``, never as ``NaN`` / ``Infinity``, which strict JSON readers reject. Every record
    also goes to the ``sinks`` (TensorBoard, W&B: :mod:`kpdiff.engine.sinks`).
    """

    def __init__(self, path: Path, *, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled
        self.sinks: list[MetricSink] = []

    def start(self, *, keep_until: int | None) -> None:
        """Start a new log (``None``), or keep only records up to step ``keep_until`` (resume:
        the steps after the checkpoint are run, and logged, again)."""
        if not self.enabled or not self.path.exists():
            return
        kept = []
        if keep_until is not None:
            for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:  # a line cut short by a kill
                    continue
                step = record.get("step", 0) if isinstance(record, dict) else None
                if isinstance(step, int) and step <= keep_until:
                    kept.append(line + "\n")
        write_text_atomic(self.path, "".join(kept))

    def write(self, **record: Any) -> None:
        if not self.enabled:
            return
        record["time"] = round(time.time(), 3)
        record = _finite_or_null(record)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, allow_nan=False) + "\n")
        for sink in self.sinks:
            sink.write(record)

    def close(self) -> None:
        """Close the sinks (``metrics.jsonl`` is closed after every record)."""
        for sink in self.sinks:
            sink.close()
        self.sinks = []


def _finite_or_null(value: Any) -> Any:
    """``value`` with every NaN / infinite float (nested in dicts and lists too) as ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_null(v) for v in value]
    return value


class Progress:
    """A tqdm bar showing loss, lr and samples/s (silent when disabled)."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self.bar = None
        self.extra: dict[str, str] = {}
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="train", dynamic_ncols=True, mininterval=1.0)

    def update(self, n: int, **values: float) -> None:
        if self.bar is not None:
            self.set(**values)
            self.bar.update(n)

    def set(self, **values: float) -> None:
        if self.bar is None:
            return
        for k, v in values.items():
            self.extra[k] = f"{v:.3g}" if k != "loss" else f"{v:.5f}"
        self.bar.set_postfix(self.extra, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
