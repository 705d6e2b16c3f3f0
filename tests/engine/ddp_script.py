"""Launched by ``test_distributed.py`` under ``torchrun --nproc_per_node=2`` (gloo, CPU).

Usage: ``torchrun --standalone --nproc_per_node=2 ddp_script.py DATA_ROOT OUT``. Every rank
writes ``OUT/report-rank<r>.json`` with what the test compares across ranks:

- ``full``: a tiny run of 3 epochs with a validation each epoch. Each rank is given its own
  ``runtime.output_dir`` (``OUT/full-rank<r>``), so any file written by rank 1 would show.
- ``resumed``: the same run in a shared folder, stopped after step 5 (as a kill would) and
  resumed: its losses and final weights must equal ``full``'s.
- ``eval``: an evaluation sweep over one clip only (rank 1's shard is empty).

The model each rank trains is captured by wrapping ``kpdiff.engine.train.build_model`` (no hook
in the engine is needed) and summarised by a SHA-256 of its weights.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_helpers import tiny_experiment

from kpdiff.engine.distributed import cleanup, init_distributed
from kpdiff.engine.evaluate import evaluate_model

# the module, not the function kpdiff.engine re-exports under the same name
train_module = importlib.import_module("kpdiff.engine.train")


def digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main() -> None:
    data, out = Path(sys.argv[1]), Path(sys.argv[2])
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    models: list[torch.nn.Module] = []
    build = train_module.build_model

    def capture(*args, **kwargs):
        models.append(build(*args, **kwargs))
        return models[-1]

    train_module.build_model = capture

    def experiment(folder: Path):
        cfg = tiny_experiment(data, folder)
        cfg.optim.batch_size = 2  # 12 clips, 6 per rank: 3 steps per epoch
        cfg.eval.every = 1
        return cfg

    report: dict = {"rank": rank}
    full = train_module.train(experiment(out / f"full-rank{rank}"))
    report["full"] = {"losses": full.losses, "weights": digest(models[-1]), "best": full.best_ap}

    shared = experiment(out / "resumed")
    part = train_module.train(shared, stop_after=5)
    rest = train_module.train(shared, resume=True)
    report["resumed"] = {
        "losses": {**part.losses, **rest.losses},
        "weights": digest(models[-1]),
        "best": rest.best_ap,
    }

    info = init_distributed("cpu")
    datasets = train_module.prepare_datasets(shared, info)
    sweep = evaluate_model(
        models[-1], datasets.val, datasets.val_videos, sweep=[(1, 1), (2, 1)], batch_size=4,
        info=info, max_clips=1,
    )  # fmt: skip
    report["eval"] = None if sweep is None else {str(k): v.columns for k, v in sweep.ap.items()}
    (out / f"report-rank{rank}.json").write_text(json.dumps(report))
    cleanup()


if __name__ == "__main__":
    main()
