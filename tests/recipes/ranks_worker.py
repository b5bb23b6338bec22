"""Run by tests/recipes/test_ranks.py under torchrun: the rank-aware stages on one run directory.

prepare-data, train-teacher (DDP through the real Trainer), cache-teacher and generate-labels, as every rank of
``distilmt run`` calls them. Each rank appends what it did to EVENTS (one JSON line per event): the builds of the
splits and the tokenizer, the shards it wrote, the completion markers it wrote, the splits it read."""

import json
import sys
from pathlib import Path

import torch

import distilmt.data.corpus as corpus
from distilmt import ranks
from distilmt.config import load_config
from distilmt.recipes import stages
from distilmt.rundir import open_run, pairs_fingerprint


def record(events: Path, event: str, **info) -> None:
    with open(events, "a", encoding="utf-8") as f:
        f.write(json.dumps({"rank": ranks.rank(), "event": event, **info}) + "\n")


def counted(events: Path, module, name: str, describe=lambda *a, **k: {}):
    """``module.name`` wrapped so that each call is recorded (with ``describe(args)``) before it runs."""
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        record(events, name, **describe(*args, **kwargs))
        return original(*args, **kwargs)

    setattr(module, name, wrapper)


if __name__ == "__main__":
    config_file, run_dir, events = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    torch.set_num_threads(1)
    counted(events, corpus, "plan_splits")  # the streaming pass prepare-data makes over the corpus
    counted(events, stages, "train_tokenizer")
    counted(events, stages, "mark_complete", lambda stage_dir, *a, **k: {"dir": Path(stage_dir).name})
    with ranks.main_first("opening the run directory"):
        cfg = open_run(run_dir, load_config(file=config_file))
    splits = stages.prepare_data(cfg, run_dir)
    record(events, "splits", train=pairs_fingerprint(splits.train), n_train=len(splits.train))
    stages.train_teacher(cfg, run_dir)
    stages.cache_teacher(cfg, run_dir, on_shard=lambda done, total: record(events, "cache_shard", shard=done - 1))
    stats = stages.generate_labels(cfg, run_dir,
                                   on_shard=lambda done, total, info: record(events, "label_shard", shard=done - 1))
    record(events, "labels", kept=stats["kept"], world=ranks.world_size())
    try:  # a failure on rank 0 in a step the others wait for: one line on each of them, not a hang
        ranks.on_main(lambda: 1 / 0, "dividing by zero")
    except Exception as exc:  # noqa: BLE001 - recorded for the test
        record(events, "failure", kind=type(exc).__name__, message=str(exc))
    if torch.distributed.is_initialized():  # leave the gloo group cleanly: no abort at interpreter exit
        ranks.barrier()
        torch.distributed.destroy_process_group()
