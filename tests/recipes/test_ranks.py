"""Rank-aware stages under torchrun on CPU (gloo): two processes run prepare-data, train-teacher (DDP through the
real Trainer), cache-teacher and generate-labels on one run directory (tests/recipes/ranks_worker.py). The data is
prepared once, the shards are split r, r + 2, ..., rank 0 writes every marker, and the teacher cache and the
distilled corpus are byte for byte what one process builds from the same teacher."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from distilmt import ranks
from distilmt.data.corpus import load_splits
from distilmt.data.readers import write_tsv
from distilmt.recipes import stages
from distilmt.rundir import open_run, pairs_fingerprint
from helpers import write_config

WORKER = Path(__file__).with_name("ranks_worker.py")
SRC = Path(__file__).resolve().parents[2] / "src"
STAGE_INPUTS = ("config.yaml", "data", "tokenizer", "teacher")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, verse_pairs) -> tuple[Path, list[dict]]:
    """The run directory two torchrun processes made, and what each rank recorded."""
    work = tmp_path_factory.mktemp("ranks")
    write_tsv(verse_pairs[:280], work / "corpus.tsv")
    config = write_config(work, data__corpus=str(work / "corpus.tsv"), data__dev_size=20, data__test_size=20,
                          data__max_train_pairs=0, data__max_tokens=64, teacher_train__max_steps=3, teacher_train__eval_every_epoch=False,
                          distill__teacher_cache=True, distill__cache_shard_size=50, seqkd__enabled=True,
                          seqkd__engine="hf", seqkd__shard_size=50, seqkd__num_beams=2, seqkd__max_new_tokens=12)
    run_dir, events = work / "run", work / "events.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC), "DISTILMT_CACHE": str(work / "cache")}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER),
           str(config), str(run_dir), str(events)]  # --standalone: torchrun picks a free port itself
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return run_dir, [json.loads(line) for line in events.read_text(encoding="utf-8").splitlines()]


def _one_process_copy(run_dir: Path, out: Path) -> Path:
    """The inputs of cache-teacher and generate-labels (config, data, tokenizer, the DDP-trained teacher) copied."""
    out.mkdir()
    for name in STAGE_INPUTS:
        source = run_dir / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, out / name)
    return out


def _files(folder: Path, skip: tuple[str, ...] = (".complete",)) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name not in skip}


def _one_thread(fn):
    """``fn()`` with one intra-op thread, as each torchrun process had (so the float sums run in the same order)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(threads)


def _by_rank(events: list[dict], event: str) -> dict[int, list[dict]]:
    found: dict[int, list[dict]] = {}
    for e in events:
        if e["event"] == event:
            found.setdefault(e["rank"], []).append(e)
    return found


@pytest.mark.slow
def test_data_is_prepared_once_and_every_rank_reads_the_same_splits(two_ranks):
    run_dir, events = two_ranks
    assert [e["rank"] for e in events if e["event"] == "plan_splits"] == [0]
    assert [e["rank"] for e in events if e["event"] == "train_tokenizer"] == [0]
    read = _by_rank(events, "splits")
    assert sorted(read) == [0, 1]
    train = load_splits(run_dir / "data").train
    assert {e["train"] for rank in read.values() for e in rank} == {pairs_fingerprint(train)}
    assert read[0][0]["n_train"] == read[1][0]["n_train"] == len(train) > 200


@pytest.mark.slow
def test_rank_0_writes_every_marker_once_after_the_ddp_teacher_is_saved(two_ranks):
    run_dir, events = two_ranks
    marks = [e for e in events if e["event"] == "mark_complete"]
    assert {e["rank"] for e in marks} == {0}
    assert Counter(e["dir"] for e in marks) == {"tokenizer": 1, "teacher": 1, "teacher-cache": 1, "distilled": 1}
    assert (run_dir / "teacher" / "model.safetensors").is_file() and (run_dir / "teacher" / ".complete").is_file()
    assert not (run_dir / "teacher" / "checkpoints").exists()  # dropped once, by rank 0, after the marker
    assert all(e["world"] == 2 for e in events if e["event"] == "labels")


@pytest.mark.slow
def test_the_teacher_cache_built_by_two_ranks_is_byte_identical_to_one_process(two_ranks, tmp_path):
    run_dir, events = two_ranks
    shards = {rank: sorted(e["shard"] for e in found) for rank, found in _by_rank(events, "cache_shard").items()}
    assert shards == {0: [0, 2, 4], 1: [1, 3]}  # rank r builds shards r, r + 2, ... of 5
    one = _one_process_copy(run_dir, tmp_path / "one")
    cfg = open_run(one)
    stats = _one_thread(lambda: stages.cache_teacher(cfg, one))
    assert 200 < stats["n_examples"] <= 250  # 5 shards of 50
    two_files, one_files = _files(run_dir / "teacher-cache"), _files(one / "teacher-cache")
    assert sorted(one_files) == sorted(two_files)
    assert [name for name in one_files if one_files[name] != two_files[name]] == []


@pytest.mark.slow
def test_the_labels_generated_by_two_ranks_are_byte_identical_to_one_process(two_ranks, tmp_path):
    run_dir, events = two_ranks
    shards = {rank: sorted(e["shard"] for e in found) for rank, found in _by_rank(events, "label_shard").items()}
    assert shards == {0: [0, 2, 4], 1: [1, 3]}
    one = _one_process_copy(run_dir, tmp_path / "one")
    cfg = open_run(one)
    stats = _one_thread(lambda: stages.generate_labels(cfg, one))
    skip = (".complete", "stats.json")  # stats.json holds the seconds it took
    two_files, one_files = _files(run_dir / "distilled", skip), _files(one / "distilled", skip)
    assert sorted(one_files) == sorted(two_files) and "train.tsv" in one_files
    assert [name for name in one_files if one_files[name] != two_files[name]] == []
    two_stats = json.loads((run_dir / "distilled" / "stats.json").read_text(encoding="utf-8"))
    sources = len(load_splits(run_dir / "data").train)
    assert two_stats["generated_now"] == stats["generated_now"] == sources  # every source, counted over both ranks
    assert {k: two_stats[k] for k in ("kept", "filtered", "mean_score")} == \
        {k: stats[k] for k in ("kept", "filtered", "mean_score")}


@pytest.mark.slow
def test_a_failure_on_rank_0_is_one_line_on_the_others(two_ranks):
    _, events = two_ranks
    failures = {rank: found[0] for rank, found in _by_rank(events, "failure").items()}
    assert failures[0]["kind"] == "ZeroDivisionError"
    assert failures[1]["kind"] == "RankError"
    assert failures[1]["message"] == ("rank 1: rank 0 failed while dividing by zero (ZeroDivisionError: division by "
                                      "zero); its log says more")


def test_one_process_is_rank_0_of_a_world_of_one(monkeypatch):
    """Without torchrun every helper is a no-op: this process builds every shard and runs what rank 0 runs."""
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert (ranks.world_size(), ranks.rank(), ranks.is_main(), ranks.init()) == (1, 0, True, False)
    assert range(7)[ranks.my_shards()] == range(7)
    assert ranks.gather("x") == ["x"] and ranks.on_main(lambda: 42, "answering") == 42
    with ranks.main_first("nothing"):
        ranks.barrier()
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "1")
    assert list(range(8)[ranks.my_shards()]) == [1, 4, 7] and not ranks.is_main()
