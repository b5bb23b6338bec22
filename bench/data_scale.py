"""How the data path scales with the corpus: prepare-data and the first training steps at 100k and 1M pairs.

Corpora are made from real sentences (Multi30k en-de train, ../shared/data/multi30k/), cycled to the size asked
for; every line after the first cycle gets its cycle number appended to both sides so the pairs stay distinct
(Multi30k length plus one or two tokens), and every 100th line repeats an earlier one so deduplication has work.

For each size, in fresh processes (each measured alone, its peak resident memory from getrusage):

* ``prepare``: the ``prepare-data`` stage (:func:`distilmt.recipes.stages.prepare_data`: streaming splits with hashing
  dedup and the held-out check, the tokenizer trained on the training split, the training split tokenised into the
  memory-mapped token store);
* ``train``: the first training steps of a tiny model (d_model 32) on the prepared run through
  :func:`distilmt.training.loop.train_seq2seq`, the resident memory (VmRSS, and its file-backed part RssFile: the
  mapped pages in use) read at the end of the first optimizer step.

Ends with ``name: value`` lines; ``train_start_rss_bytes_per_pair`` is (RSS at the first step of the 1M run - RSS of
the 100k run) / 900k. Run at ``OMP_NUM_THREADS=1`` (the bench sets it for its children); on a shared machine the
times vary with the load.

    .venv/bin/python bench/data_scale.py [--sizes 100000,1000000] [--with-5m] [--steps 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "multi30k"


def make_corpus(path: Path, size: int) -> None:
    """``size`` lines of TSV from Multi30k's training pairs, made distinct, 1 in 100 an exact repeat."""
    with open(SHARED / "train.en", encoding="utf-8") as en, open(SHARED / "train.de", encoding="utf-8") as de:
        base = [(" ".join(s.split()), " ".join(t.split())) for s, t in zip(en, de) if s.strip() and t.strip()]
    with open(path, "w", encoding="utf-8") as out:
        for i in range(size):
            if i % 100 == 99:
                i = i // 2  # an earlier line again: a duplicate to drop
            cycle, (src, tgt) = divmod(i, len(base))[0], base[i % len(base)]
            if cycle:
                src, tgt = f"{src} {cycle}", f"{tgt} {cycle}"
            out.write(f"{src}\t{tgt}\n")


def rss() -> dict:
    """Current resident memory of this process (bytes): total, anonymous and file-backed (mapped files)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def config(corpus: Path, steps: int):
    from distilmt.config import load_config

    return load_config(overrides=[f"data.corpus={corpus}", "data.source_lang=en", "data.target_lang=de",
                                  "data.vocab_size=4000", f"student_train.max_steps={steps}",
                                  "student_train.eval_every_epoch=false", "student_train.warmup_steps=0",
                                  "student_train.precision=fp32"])


def timed(module, name: str, times: dict) -> None:
    """Time every call of ``module.name`` into ``times[name]`` (what part of the stage takes how long)."""
    inner = getattr(module, name)

    def wrapper(*args, **kwargs):
        started = time.time()
        try:
            return inner(*args, **kwargs)
        finally:
            times[name] = times.get(name, 0.0) + time.time() - started

    setattr(module, name, wrapper)


def child_prepare(corpus: Path, run_dir: Path) -> dict:
    from distilmt.recipes import stages

    times: dict = {}
    for name in ("prepare_splits", "train_tokenizer", "token_store"):
        timed(stages, name, times)
    started = time.time()
    splits = stages.prepare_data(config(corpus, 1), run_dir)
    return {"seconds": time.time() - started, "peak_rss": peak_rss(), "train": len(splits.train),
            "duplicates_dropped": splits.stats["duplicates_dropped"],
            "train_dropped_overlap": splits.stats["train_dropped_overlap"], **{f"{k}_s": v for k, v in times.items()}}


def child_train(corpus: Path, run_dir: Path, steps: int) -> dict:
    from transformers import TrainerCallback

    from distilmt.config import TeacherConfig
    from distilmt.data.corpus import load_splits
    from distilmt.models.build import build_model
    from distilmt.rundir import load_tokenizer
    from distilmt.training.loop import train_seq2seq

    cfg = config(corpus, steps)
    seen: dict = {}

    class FirstStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 1:
                seen.update(rss(), seconds_to_first_step=time.time() - started)

    started = time.time()
    before = rss()
    splits = load_splits(run_dir / "data")
    tokenizer = load_tokenizer(run_dir)
    model = build_model(TeacherConfig(d_model=32, encoder_layers=1, decoder_layers=1, ffn_dim=64, heads=2),
                        tokenizer, seed=0)
    train_seq2seq(model, tokenizer, splits.train, splits.dev[:8], cfg.student_train, run_dir / "student",
                  run_dir / "tb", cfg.data.max_tokens, callbacks=[FirstStep()], name="bench")
    return {**seen, "before": before["VmRSS"], "seconds": time.time() - started, "peak_rss": peak_rss(),
            "train": len(splits.train)}


def run_child(*args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, __file__, "--child", *args], env=env, capture_output=True, text=True)
    if done.returncode:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"data_scale: child {args[0]} failed ({done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def label(size: int) -> str:
    return f"{size // 1_000_000}m" if size % 1_000_000 == 0 else f"{size // 1000}k"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="corpus sizes in pairs, comma-separated")
    parser.add_argument("--with-5m", action="store_true", help="add a 5,000,000-pair corpus")
    parser.add_argument("--steps", type=int, default=3, help="training steps of the tiny model")
    parser.add_argument("--keep", default="", help="work in this directory and keep it (default: a temporary one)")
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        what, corpus, run_dir = args.child[0], Path(args.child[1]), Path(args.child[2])
        result = child_prepare(corpus, run_dir) if what == "prepare" else child_train(corpus, run_dir, args.steps)
        print(json.dumps(result))
        return
    if not SHARED.is_dir():
        raise SystemExit(f"data_scale: {SHARED} is not there; it needs ../shared/data beside the checkout")
    sizes = [int(s) for s in args.sizes.split(",") if s] + ([5_000_000] if args.with_5m else [])
    work = Path(args.keep or tempfile.mkdtemp(prefix="data_scale-"))
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    try:
        for size in sizes:
            corpus, run_dir = work / f"corpus-{label(size)}.tsv", work / f"run-{label(size)}"
            shutil.rmtree(run_dir, ignore_errors=True)
            started = time.time()
            make_corpus(corpus, size)
            print(f"# {size:,} pairs: corpus written in {time.time() - started:.0f}s", flush=True)
            prep = run_child("prepare", str(corpus), str(run_dir))
            print(f"# prepare: splits {prep['prepare_splits_s']:.0f}s, tokenizer {prep['train_tokenizer_s']:.0f}s, "
                  f"tokenising {prep['token_store_s']:.0f}s")
            print(f"# prepare: {prep['seconds']:.0f}s, peak RSS {prep['peak_rss'] / 1e6:.0f} MB, {prep['train']:,} "
                  f"train pairs ({prep['duplicates_dropped']:,} duplicates dropped)", flush=True)
            train = run_child("train", str(corpus), str(run_dir))
            print(f"# train: first step after {train['seconds_to_first_step']:.0f}s at RSS "
                  f"{train['VmRSS'] / 1e6:.0f} MB ({train['RssFile'] / 1e6:.0f} MB of it file-backed)", flush=True)
            results[size] = (prep, train)
            if not args.keep:
                shutil.rmtree(run_dir, ignore_errors=True)
                corpus.unlink()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"omp_num_threads: 1\ncpu_count: {os.cpu_count()}")
    for size, (prep, train) in results.items():
        name = label(size)
        print(f"prepare_{name}_seconds: {prep['seconds']:.1f}")
        print(f"prepare_{name}_pairs_per_second: {size / prep['seconds']:.0f}")
        for part in ("prepare_splits", "train_tokenizer", "token_store"):
            print(f"prepare_{name}_{part}_seconds: {prep[part + '_s']:.1f}")
        print(f"prepare_{name}_peak_rss_mb: {prep['peak_rss'] / 2**20:.0f}")
        print(f"prepare_{name}_peak_rss_bytes_per_pair: {prep['peak_rss'] / size:.0f}")
        print(f"train_{name}_seconds_to_first_step: {train['seconds_to_first_step']:.1f}")
        print(f"train_{name}_start_rss_mb: {train['VmRSS'] / 2**20:.0f}")
        print(f"train_{name}_start_rss_anon_mb: {train['RssAnon'] / 2**20:.0f}")
        print(f"train_{name}_start_rss_file_mb: {train['RssFile'] / 2**20:.0f}")
        print(f"train_{name}_start_rss_bytes_per_pair: {train['VmRSS'] / size:.0f}")
    small, large = (100_000, 1_000_000) if {100_000, 1_000_000} <= set(results) else (min(results), max(results))
    if large > small:
        extra = large - small
        for key, field in (("", "VmRSS"), ("_anon", "RssAnon")):
            grow = results[large][1][field] - results[small][1][field]
            print(f"train_start_rss{key}_bytes_per_pair: {grow / extra:.0f}")


if __name__ == "__main__":
    main()
