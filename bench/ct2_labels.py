"""Benchmark: sequence-level KD labels decoded by HF generate vs by the teacher converted to CTranslate2 int8.

    .venv/bin/python bench/ct2_labels.py [--teacher DIR | --shape quick|opus] [--steps 300] [--n 256] [--beam 4]
                                         [--threads 2] [--repeats 2] [--work runs/bench-ct2-labels]

The teacher is ``--teacher DIR`` (a Hugging Face seq2seq directory with its tokenizer), else it is made in
``--work``: ``--shape quick`` (default) is the quick preset's teacher (hu->en, 4,000-token vocabulary, d128 3+3,
prenorm) trained ``--steps`` updates on the built-in corpus with distilmt's own trainer (``train_seq2seq``; kept in
``--work`` and reused by the next run); ``--shape opus`` is an Opus-MT-shaped Marian (d512 6+6, ffn 2048, 8 heads)
with random weights and the same vocabulary (no training: its hypotheses rarely end before ``--max-new-tokens``, a
worst case for both engines). Sources: the first ``--n`` sources of the built-in corpus's test split.

Both engines run the label path of ``distilmt generate-labels`` on the same sources with the same
:class:`~distilmt.config.SeqKDConfig` (beam ``--beam``, length penalty 1, ``max_new_tokens``, batch_tokens 2,000,
scores included): HF ``translate_scored`` (generate + a teacher-forced scoring pass) with
``torch.set_num_threads(T)``, and ``Ct2Translator.translate_scored`` (``translate_batch`` + ``score_batch``) on
the int8 conversion with intra 1 x inter T threads (what generate-labels picks on a T-core CPU, T <= 4). Each
engine is timed in its own Python process (timing both in one process slowed HF down here), after a warm-up on
16 sources; a timing is the median of ``--repeats`` passes. Prints ``name: value`` lines: labels per second of each
engine, the speedup, and the agreement (share of sources whose label is the same string; mean |score difference|).
Numbers are measured once on one machine: ratios to read, not pass/fail thresholds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from distilmt.config import SeqKDConfig, load_config
from distilmt.data.corpus import build_splits
from distilmt.data.tokenizer import train_tokenizer
from distilmt.export import export_ctranslate2
from distilmt.models.build import build_model
from distilmt.models.generation import translate_scored
from distilmt.models.loading import load_seq2seq
from distilmt.models.translators import Ct2Translator
from distilmt.rundir import is_complete, mark_complete
from distilmt.training.loop import train_seq2seq


def make_teacher(work: Path, shape: str, steps: int) -> Path:
    """The quick preset's teacher trained ``steps`` updates, or a random Opus-MT-shaped Marian (kept in ``work``)."""
    out = work / (f"teacher-{shape}" if shape == "opus" else f"teacher-{shape}-{steps}")
    if is_complete(out):
        return out
    cfg = load_config("quick")
    splits = build_splits(cfg.data)
    tokenizer = train_tokenizer((t for pair in splits.train for t in pair), cfg.data.vocab_size, work / "tokenizer")
    started = time.perf_counter()
    if shape == "opus":
        teacher_cfg = dataclasses.replace(cfg.teacher, arch="marian", d_model=512, encoder_layers=6, decoder_layers=6,
                                          ffn_dim=2048, heads=8, dropout=0.0)
        model = build_model(teacher_cfg, tokenizer, seed=0)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    else:
        model = build_model(cfg.teacher, tokenizer, seed=0)
        train_cfg = dataclasses.replace(cfg.teacher_train, max_steps=steps, warmup_steps=min(100, steps // 3),
                                        bf16=False, eval_every_epoch=False)
        train_seq2seq(model, tokenizer, splits.train, [], train_cfg, out, work / "tb", cfg.data.max_tokens)
    mark_complete(out, seconds=round(time.perf_counter() - started, 1))
    return out


def worker(args) -> None:
    """One engine's timings and outputs, as one JSON line on stdout."""
    logging.disable(logging.WARNING)
    sources = json.loads(Path(args.sources).read_text(encoding="utf-8"))
    cfg = SeqKDConfig(num_beams=args.beam, max_new_tokens=args.max_new_tokens)
    if args.worker == "hf":
        torch.set_num_threads(args.threads)
        model, tokenizer = load_seq2seq(args.model)

        def run(chunk):
            return translate_scored(model, tokenizer, chunk, cfg)
    else:
        translator = Ct2Translator(args.model, intra_threads=1, inter_threads=args.threads)

        def run(chunk):
            return translator.translate_scored(chunk, cfg)

    run(sources[:16])
    seconds = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        out = run(sources)
        seconds.append(time.perf_counter() - started)
    print(json.dumps({"seconds": seconds, "labels": [hyps[0] for hyps in out]}))


def timed(engine: str, model: Path, sources_file: Path, args) -> dict:
    command = [sys.executable, __file__, "--worker", engine, "--model", str(model), "--sources", str(sources_file),
               "--beam", str(args.beam), "--threads", str(args.threads), "--repeats", str(args.repeats),
               "--max-new-tokens", str(args.max_new_tokens)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", help="a Hugging Face seq2seq teacher directory (default: make one in --work)")
    parser.add_argument("--shape", choices=("quick", "opus"), default="quick")
    parser.add_argument("--steps", type=int, default=300, help="training updates of the quick-shaped teacher")
    parser.add_argument("--work", default="runs/bench-ct2-labels", help="where the made teacher is kept")
    parser.add_argument("--n", type=int, default=256, help="sources translated per timed pass")
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for HF; CT2 intra 1 x inter THREADS")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per engine (the median is reported)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--worker", choices=("hf", "ct2"), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--sources", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    teacher = Path(args.teacher) if args.teacher else make_teacher(work, args.shape, args.steps)
    made = time.perf_counter() - started
    sources = [s for s, _ in build_splits(load_config("quick").data).test[:args.n]]
    with tempfile.TemporaryDirectory(prefix="distilmt-ct2-labels-") as tmp:
        started = time.perf_counter()
        ct2_dir = export_ctranslate2(teacher, Path(tmp) / "teacher-ct2-int8", quantization="int8")
        converted = time.perf_counter() - started
        sources_file = Path(tmp) / "sources.json"
        sources_file.write_text(json.dumps(sources, ensure_ascii=False), encoding="utf-8")
        hf = timed("hf", teacher, sources_file, args)
        ct2 = timed("ct2", ct2_dir, sources_file, args)
    hf_s, ct2_s = statistics.median(hf["seconds"]), statistics.median(ct2["seconds"])
    same = [a[0] == b[0] for a, b in zip(hf["labels"], ct2["labels"])]
    diff = [abs(a[1] - b[1]) for a, b in zip(hf["labels"], ct2["labels"])]
    print(f"teacher: {teacher} ({'given' if args.teacher else f'made in {made:.0f}s'}), "
          f"{sum(p.numel() for p in load_seq2seq(teacher)[0].parameters()):,} parameters")
    print(f"sources: {len(sources)} (beam {args.beam}, max_new_tokens {args.max_new_tokens}, threads {args.threads}, "
          f"median of {args.repeats}); int8 conversion {converted:.1f}s")
    print(f"seconds_hf: {hf_s:.2f}  (passes {', '.join(f'{s:.2f}' for s in hf['seconds'])})")
    print(f"seconds_ct2: {ct2_s:.2f}  (passes {', '.join(f'{s:.2f}' for s in ct2['seconds'])})")
    print(f"labels_per_s_hf: {len(sources) / hf_s:.2f}")
    print(f"labels_per_s_ct2: {len(sources) / ct2_s:.2f}")
    print(f"ct2_labels_speedup: {hf_s / ct2_s:.2f}")
    print(f"agreement: {sum(same) / len(same):.4f}")
    print(f"mean_abs_score_diff: {sum(diff) / len(diff):.4f}")
    print(f"mean_abs_score_diff_identical: {sum(d for d, s in zip(diff, same) if s) / max(sum(same), 1):.4f}")


if __name__ == "__main__":
    main()
