"""The whole job, read top to bottom: data -> tokenizer -> teacher -> students -> evaluation -> report.

Each stage reads and writes one run directory and is also a CLI command. A stage whose output is
complete (a ``.complete`` marker written after its last file) is skipped; an interrupted training
continues from its last checkpoint with ``resume=True``.

    RUN_DIR/
      config.yaml            resolved configuration of this run
      data/                  train/dev/test.tsv, stats.json
      tokenizer/             joint subword tokenizer (plain transformers)
      teacher/               teacher (Hugging Face directory; checkpoints/ while training)
      teacher-lora/          the teacher fine-tuned with LoRA adapters (merged model; adapter/ holds the adapters)
      teacher-cache/         the teacher's top-k probabilities on the training set (distill.teacher_cache)
      distilled/             the teacher's translations of the training sources (sequence-level KD, seqkd)
      student-baseline/      student trained on references only (the no-KD twin)
      student-kd/            the same student trained with token-level KD
      student-seqkd/         the same student trained on the teacher's translations (only with seqkd.enabled)
      progressive/, student-progressive/   the chain teacher -> ... -> student (only with distill.progressive_factor)
      export/                CTranslate2 export of the KD student
      tb/<model>/            TensorBoard event files
      metrics.json, metrics.csv, report.md, report.html

Under ``torchrun --nproc_per_node N`` (see :mod:`distilmt.ranks`) every process runs :func:`run`: rank 0 opens the
run directory and prepares the data while the others wait; the teacher cache and the distilled corpus are split
by shard across the ranks; the teacher and the students train with DDP; evaluation, export and the report run once,
on rank 0, and every process returns its rows.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ..config import RunConfig, load_config
from ..data.corpus import load_splits
from ..errors import RunDirError
from ..evaluation.compare import evaluate_models, to_markdown, write_csv, write_json, write_translations
from ..evaluation.metrics import paired_bootstrap
from ..evaluation.report import write_report
from ..export import export_ctranslate2
from ..models.loading import is_causal_dir
from ..models.translators import save_prompt
from ..monitor import DistillationMonitor
from ..ranks import main_first, on_main, world_size
from ..rundir import is_complete, mark_complete, open_run, require_teacher, teacher_fingerprint
from .progressive import train_chain
from .stages import (
    PROGRESSIVE_STUDENT,
    SEQKD_STUDENT,
    STUDENTS,
    TEACHER_LORA,
    cache_teacher,
    check_precision,
    generate_labels,
    prepare_data,
    student_names,
    teacher_ct2,
    test_subset,
    train_teacher,
    train_teacher_lora,
)
from .student import distill

log = logging.getLogger("distilmt")


def distill_progressive(cfg: RunConfig, run_dir: Path, resume: bool = False) -> list[dict]:
    """Progressive distillation: the chain teacher -> progressive/stage-k -> student-progressive, each stage taught
    by the previous one and evaluated (see :mod:`distilmt.recipes.progressive`). Returns one record per stage."""

    require_teacher(run_dir)
    return train_chain(cfg, run_dir, run_dir / "progressive", run_dir / PROGRESSIVE_STUDENT, resume=resume)


def evaluate(cfg: RunConfig, run_dir: Path,
             models: tuple[str, ...] = ("teacher", TEACHER_LORA, *STUDENTS, SEQKD_STUDENT, PROGRESSIVE_STUDENT),
             test_sets=()) -> list[dict]:
    """Translate the test set with every model, measure quality, health, size and speed; write metrics.

    ``test_sets`` (evaluation.testsets.TestSet) are scored too, one column group each."""

    splits = load_splits(run_dir / "data")
    test = test_subset(cfg, splits)
    entries = [(name, run_dir / name) for name in models if is_complete(run_dir / name)]
    causal = [name for name, path in entries if is_causal_dir(path)]
    for name in causal:  # a causal LM is opened with its prompt.json (written by the stage that saved it)
        if not (run_dir / name / "prompt.json").is_file():

            save_prompt(run_dir / name, cfg.prompt, cfg.data)
    if not entries:
        raise RunDirError(f"{run_dir}: no trained model to evaluate yet; run `distilmt run --run-dir {run_dir}`")
    if cfg.eval.export_ct2 and is_complete(run_dir / "student-kd") and "student-kd" not in causal:  # (seq2seq only)
        ct2_dir = run_dir / "export" / "student-kd-ct2-int8"
        if not is_complete(ct2_dir):
            export_ctranslate2(run_dir / "student-kd", ct2_dir, quantization="int8", force=True)
            mark_complete(ct2_dir)
        entries.append(("student-kd-ct2-int8", ct2_dir))
    if cfg.eval.teacher_ct2 and is_complete(run_dir / "teacher") and "teacher" not in causal:
        # the teacher as the labels' CTranslate2 path decodes it (converted once, shared with generate-labels)
        entries.insert(1, ("teacher-ct2-int8", teacher_ct2(run_dir / "teacher", "int8",
                                                           teacher_fingerprint(run_dir / "teacher"))))
    references = [t for _, t in test]
    result = evaluate_models(entries, [s for s, _ in test], references, cfg.data.target_lang,
                             reference_name="teacher", num_beams=cfg.eval.num_beams,
                             batch_size=cfg.eval.batch_size, max_new_tokens=cfg.eval.max_new_tokens,
                             speed_sentences=cfg.eval.speed_sentences, semantic=cfg.eval.semantic,
                             speed_settings={"min_seconds": cfg.eval.speed_min_seconds},
                             speed_rounds=cfg.eval.speed_rounds, max_source_tokens=cfg.eval.max_source_tokens,
                             direction=cfg.data.direction,
                             test_sets=[t.head(cfg.data.max_test_sentences) for t in test_sets])
    extra = {"test_sets": result.set_info()}
    if {"student-baseline", "student-kd"} <= result.hyps.keys():  # is KD's gain over its twin more than luck?

        extra["kd_vs_baseline"] = paired_bootstrap(result.hyps["student-baseline"], result.hyps["student-kd"],
                                                   references, cfg.data.target_lang)
    write_json(result.rows, run_dir / "metrics.json", **extra)
    write_csv(result.rows, run_dir / "metrics.csv")
    write_translations(result, run_dir / "translations.json")
    return result.rows


def compare(models: list[str], out_dir: str | Path, test_pairs: list[tuple[str, str]], target_lang: str,
            reference: str | None = None, num_beams: int = 4, speed_sentences: int = 64, direction: str = "",
            test_sets=(), speed_rounds: int = 3) -> list[dict]:
    """Evaluate any HF / CTranslate2 model directories on a test set; write comparison.json/csv/md, report.

    ``models`` are ``DIR`` or ``NAME=DIR``; the reference row (default: the first) anchors compression,
    speed-up and quality retention. ``test_pairs`` are in ``direction`` ("SRC-TGT", "" if unknown);
    ``test_sets`` (evaluation.testsets.TestSet) are scored too, one column group each.
    """

    entries = []
    for item in models:
        name, _, path = item.rpartition("=") if "=" in item else (Path(item).name, "", item)
        if not Path(path).is_dir():
            raise RunDirError(f"{path}: no such model directory")
        entries.append((name, Path(path)))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sources, refs = [s for s, _ in test_pairs], [t for _, t in test_pairs]
    result = evaluate_models(entries, sources, refs, target_lang, reference_name=reference or entries[0][0],
                             num_beams=num_beams, speed_sentences=speed_sentences, direction=direction,
                             test_sets=test_sets, speed_rounds=speed_rounds)
    rows = result.rows
    write_json(rows, out_dir / "comparison.json", test_sets=result.set_info())
    write_csv(rows, out_dir / "comparison.csv")
    (out_dir / "comparison.md").write_text(to_markdown(rows), encoding="utf-8")
    write_translations(result, out_dir / "translations.json")
    write_report(out_dir, title="distilmt comparison", metrics_file="comparison.json")
    return rows


def report(cfg: RunConfig, run_dir: Path) -> Path:

    return write_report(run_dir, cfg)


def run(cfg: RunConfig, run_dir: str | Path, resume: bool = False) -> list[dict]:
    """The main job: everything above, in order, into one run directory."""
    run_dir = Path(run_dir)
    with main_first("opening the run directory"):  # under torchrun: rank 0 writes config.yaml, the others read it
        cfg = open_run(run_dir, cfg)
    precisions = check_precision(cfg)  # a precision this device cannot run stops the run before the first stage
    log.info("precision: %s", ", ".join(f"{section} {value}" for section, value in precisions.items()))
    if world_size() > 1:
        log.info("%d processes: data prepared once, teacher cache and labels split by shard, training with DDP, "
                 "evaluation on rank 0", world_size())
    started = time.time()
    prepare_data(cfg, run_dir)
    train_teacher(cfg, run_dir, resume=resume)
    if cfg.distill.teacher_cache:
        cache_teacher(cfg, run_dir)
    if cfg.seqkd.enabled and cfg.seqkd.train_on != "original":
        generate_labels(cfg, run_dir)
    distill(cfg, run_dir, resume=resume)
    if cfg.distill.progressive_factor:
        distill_progressive(cfg, run_dir, resume=resume)
    rows = on_main(lambda: _evaluate_and_report(cfg, run_dir), "evaluating the models")
    log.info("run finished in %.1f min", (time.time() - started) / 60)
    return rows


def _evaluate_and_report(cfg: RunConfig, run_dir: Path) -> list[dict]:
    rows = evaluate(cfg, run_dir)
    report(cfg, run_dir)
    return rows


def quick_visual_distill(run_dir: str | Path = "runs/visual", preset: str = "quick", overrides: list[str] = (),
                         **monitor_settings):
    """One call: prepare data, train (or load) the teacher, distil a KD student with the monitor on.

    ``monitor_settings`` set MonitorConfig fields (e.g. ``sample_frequency=20, language="zh"``). Returns
    the :class:`~distilmt.monitor.DistillationMonitor`, whose ``stats()`` and ``history`` hold what it saw.
    """

    settings = [*overrides, "monitor.enabled=true", *(f"monitor.{k}={v}" for k, v in monitor_settings.items())]
    cfg = open_run(run_dir, load_config(preset, overrides=settings))
    run_dir = Path(run_dir)
    prepare_data(cfg, run_dir)
    train_teacher(cfg, run_dir)
    trainer = distill(cfg, run_dir, ("student-kd",)).get("student-kd")
    if trainer is None:
        raise RunDirError(f"{run_dir}: the KD student is already trained; use a new run_dir to watch a new one")
    return next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, DistillationMonitor))


__all__ = ["quick_visual_distill", "cache_teacher", "distill", "distill_progressive", "evaluate", "generate_labels",
           "student_names", "open_run", "prepare_data", "report", "run", "train_teacher", "train_teacher_lora"]
