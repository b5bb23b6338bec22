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
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from .config import ConfigError, RunConfig, load_config, save_config

log = logging.getLogger("distilmt")

STUDENTS = {"student-baseline": False, "student-kd": True}  # name -> uses the teacher
TEACHER_LORA = "teacher-lora"  # the teacher fine-tuned with LoRA on the parallel data (`distilmt train-teacher-lora`)
SEQKD_STUDENT = "student-seqkd"  # trained on RUN_DIR/distilled/ (the teacher's translations); only with seqkd.enabled
PROGRESSIVE_STUDENT = "student-progressive"  # last stage of the progressive chain; only with distill.progressive_factor


def student_names(cfg: RunConfig) -> tuple[str, ...]:
    """The students a run trains: the two of STUDENTS, and student-seqkd when seqkd.enabled."""
    names = (*STUDENTS, SEQKD_STUDENT) if cfg.seqkd.enabled else tuple(STUDENTS)
    if cfg.teacher.kind != cfg.student.kind:  # a causal LM and a seq2seq model share no vocabulary: no student-kd
        names = tuple(n for n in names if n != "student-kd")
    return names


class RunDirError(ValueError):
    """A run directory that cannot be used as asked."""


# -- run directory ------------------------------------------------------------------------------------
def open_run(run_dir: str | Path, config: RunConfig | None = None) -> RunConfig:
    """Create ``run_dir`` with ``config.yaml``, or load the config already there.

    A run directory keeps one configuration: asking for a different one is refused rather than mixing
    models trained under two settings.
    """
    run_dir = Path(run_dir)
    saved = run_dir / "config.yaml"
    if saved.is_file():
        existing = load_config(file=saved)
        if config is not None and config.to_dict() != existing.to_dict():
            changed = _first_difference(existing.to_dict(), config.to_dict())
            raise RunDirError(f"{run_dir}: holds a run made with other settings ({changed}); "
                              "use a new --run-dir, or delete this one to start over")
        return existing
    if config is None:
        raise RunDirError(f"{run_dir}: no config.yaml here; start with `distilmt run` or `distilmt prepare-data` "
                          "and a --preset or --config")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, saved)
    return config


def _first_difference(a: dict, b: dict, prefix: str = "") -> str:
    for key in sorted(set(a) | set(b)):
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            found = _first_difference(a[key], b[key], f"{prefix}{key}.")
            if found:
                return found
        elif a.get(key) != b.get(key):
            return f"{prefix}{key}: {a.get(key)!r} there, {b.get(key)!r} now"
    return ""


def is_complete(stage_dir: Path) -> bool:
    return (Path(stage_dir) / ".complete").is_file()


def mark_complete(stage_dir: Path, **info) -> None:
    (Path(stage_dir) / ".complete").write_text(json.dumps({"finished": time.time(), **info}, indent=1))


# -- stages -------------------------------------------------------------------------------------------
def prepare_data(cfg: RunConfig, run_dir: Path):
    """Corpus splits (built-in or the user's files) and the tokenizer (trained here or the teacher's)."""
    from .data.corpus import prepare_data as prepare_splits
    from .data.tokenizer import train_tokenizer

    splits = prepare_splits(cfg.data, run_dir / "data")
    tok_dir = run_dir / "tokenizer"
    if not is_complete(tok_dir):
        if cfg.teacher.path and cfg.teacher.kind == "seq2seq":  # a causal teacher keeps its own tokenizer
            from .models.build import load_seq2seq

            _, tokenizer = load_seq2seq(cfg.teacher.path)
            tokenizer.save_pretrained(str(tok_dir))
        else:
            texts = (text for pair in splits.train for text in pair)
            train_tokenizer(texts, cfg.data.vocab_size, tok_dir)
        mark_complete(tok_dir)
    return splits


def load_tokenizer(run_dir: Path):
    from transformers import AutoTokenizer

    tok_dir = Path(run_dir) / "tokenizer"
    if not is_complete(tok_dir):
        raise RunDirError(f"{run_dir}: no tokenizer yet; run `distilmt prepare-data --run-dir {run_dir}` first")
    return AutoTokenizer.from_pretrained(str(tok_dir))


def train_teacher(cfg: RunConfig, run_dir: Path, resume: bool = False):
    """Train the teacher from scratch, or take the user's teacher directory as it is."""
    from .data.corpus import load_splits
    from .models.build import build_model, load_seq2seq
    from .training import train_seq2seq

    out = run_dir / "teacher"
    if is_complete(out):
        log.info("teacher: complete, skipped")
        return
    if cfg.teacher.path:
        if cfg.teacher.kind == "causal":
            from .causal import load_causal, save_prompt

            model, tokenizer = load_causal(cfg.teacher.path)
        else:
            model, tokenizer = load_seq2seq(cfg.teacher.path)
        model.save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))
        if cfg.teacher.kind == "causal":  # how to prompt it, for evaluate/translate/compare (prompt.json)
            save_prompt(out, cfg.prompt, cfg.data)
        mark_complete(out, source=cfg.teacher.path)
        return
    splits = load_splits(run_dir / "data")
    tokenizer = load_tokenizer(run_dir)
    model = build_model(cfg.teacher, tokenizer, seed=cfg.teacher_train.seed)
    log.info("teacher: training %s parameters", f"{model.num_parameters():,}")
    started = time.time()
    train_seq2seq(model, tokenizer, splits.train, _dev_subset(cfg, splits), cfg.teacher_train, out,
                  run_dir / "tb" / "teacher", cfg.data.max_tokens, resume=resume)
    mark_complete(out, seconds=round(time.time() - started, 1))


def _require_teacher(run_dir: Path) -> None:
    if not is_complete(run_dir / "teacher"):
        raise RunDirError(f"{run_dir}: no trained teacher yet; run `distilmt train-teacher --run-dir {run_dir}`")


def teacher_on_device(model_dir: Path):
    """A teacher model (seq2seq directory), on the GPU when there is one (for one pass over the training set)."""
    import torch

    from .models.build import load_seq2seq

    model, _ = load_seq2seq(model_dir)
    return model.to("cuda" if torch.cuda.is_available() else "cpu")


def train_teacher_lora(cfg: RunConfig, run_dir: Path, resume: bool = False, out_dir: Path | None = None,
                       **complete_info) -> Path:
    """Fine-tune the teacher with LoRA adapters on the training pairs (``teacher-lora/``, or ``out_dir``: the merged
    model, its ``adapter/``); ``lora.teacher_steps`` updates at ``lora.learning_rate``, batches as ``teacher_train``.
    ``complete_info`` goes into the stage's ``.complete`` marker."""
    from .data.corpus import load_splits
    from .lora import lora_train_config, train_lora
    from .models.build import load_seq2seq

    _require_teacher(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / TEACHER_LORA
    if is_complete(out):
        log.info("%s: complete, skipped", TEACHER_LORA)
        return out
    splits = load_splits(run_dir / "data")
    model, tokenizer = load_seq2seq(run_dir / "teacher")
    train_cfg = lora_train_config(cfg.teacher_train, cfg.lora, max_steps=cfg.lora.teacher_steps,
                                  warmup_steps=cfg.lora.warmup_steps)
    started = time.time()
    train_lora(model, tokenizer, splits.train, _dev_subset(cfg, splits), train_cfg, cfg.lora, out,
               out.parent / "tb" / out.name, cfg.data.max_tokens, base_path=run_dir / "teacher", resume=resume,
               name=TEACHER_LORA)
    mark_complete(out, seconds=round(time.time() - started, 1), **complete_info)
    return out


def cache_teacher(cfg: RunConfig, run_dir: Path, rebuild: bool = False) -> dict:
    """One pass of the frozen teacher over the training set, storing its top-k probabilities (``teacher-cache/``).

    Continues an interrupted build; a complete cache is checked against the run's data, tokenizer and teacher
    and skipped (a stale one is refused: ``rebuild=True`` deletes and rebuilds it). Returns the cache's stats.
    """
    import shutil

    from .cache import TeacherCache, build_teacher_cache, cache_fingerprint, teacher_fingerprint
    from .data.corpus import load_splits

    _require_teacher(run_dir)
    out = run_dir / "teacher-cache"
    splits = load_splits(run_dir / "data")
    tokenizer = load_tokenizer(run_dir)
    teacher_id = teacher_fingerprint(run_dir / "teacher")
    if rebuild and out.exists():
        shutil.rmtree(out)
    if is_complete(out):
        cache = TeacherCache(out, cache_fingerprint(splits.train, tokenizer, teacher_id, cfg.data.max_tokens))
        log.info("teacher-cache: complete, skipped")
        return cache.stats
    teacher_model = teacher_on_device(run_dir / "teacher")
    log.info("teacher-cache: top-%d teacher probabilities for %d training pairs", cfg.distill.cache_top_k,
             len(splits.train))
    started = time.time()
    stats = build_teacher_cache(
        out, splits.train, tokenizer, teacher_model, teacher_id=teacher_id, max_tokens=cfg.data.max_tokens,
        top_k=cfg.distill.cache_top_k, dtype=cfg.distill.cache_dtype,
        batch_tokens=4 * cfg.student_train.batch_tokens,
        on_shard=lambda done, total: log.info("teacher-cache: shard %d/%d", done, total))
    log.info("teacher-cache: %s target tokens, %.1f bytes per target token, %.1f MB in all, top-%d mass %.3f "
             "(%.0fs)", f"{stats['n_tokens']:,}", stats["bytes_per_token"], stats["total_bytes"] / 1e6, stats["k"],
             stats["mean_topk_mass"], time.time() - started)
    mark_complete(out, seconds=round(time.time() - started, 1))
    return stats


def _cached_teacher(cfg: RunConfig, run_dir: Path, train_pairs, tokenizer):
    """The KD signal read from ``teacher-cache/`` (built first if needed): the teacher model is never run."""
    from .cache import teacher_fingerprint
    from .teachers import CachedTeacher

    cache_teacher(cfg, run_dir)
    return CachedTeacher.open(run_dir / "teacher-cache", train_pairs, tokenizer,
                              teacher_fingerprint(run_dir / "teacher"), cfg.data.max_tokens)


def generate_labels(cfg: RunConfig, run_dir: Path, rebuild: bool = False, on_shard=None) -> dict:
    """The teacher translates the training sources (``distilled/``): the labels of sequence-level KD.

    Resumable shard by shard; a complete corpus made from the same sources, tokenizer, teacher and generation
    settings is skipped, a stale one refused (``rebuild=True`` deletes and rebuilds it). Returns its stats.
    """
    import shutil

    from .cache import teacher_fingerprint
    from .data.corpus import load_splits
    from .seqkd import build_distilled, labels_fingerprint, tokenizer_fingerprint

    _require_teacher(run_dir)
    out = run_dir / "distilled"
    if rebuild and out.exists():
        shutil.rmtree(out)
    sources = [s for s, _ in load_splits(run_dir / "data").train]
    tokenizer = load_tokenizer(run_dir)
    teacher_id, load = teacher_fingerprint(run_dir / "teacher"), lambda: teacher_on_device(run_dir / "teacher")
    if cfg.teacher.kind == "causal":  # prompted with prompt.template, in its own tokenizer (distilmt.causal)
        from .causal import labels_teacher

        teacher_id, load = labels_teacher(cfg, run_dir / "teacher", teacher_id)
    fingerprint = labels_fingerprint(sources, tokenizer_fingerprint(tokenizer), teacher_id, cfg.seqkd)

    hint = f"rebuild it with `distilmt generate-labels --run-dir {run_dir} --rebuild`, or delete {out}"
    stats = build_distilled(out, sources, tokenizer, load, cfg.seqkd, fingerprint, hint, on_shard)
    mark_complete(out, kept=stats["kept"], sources=stats["sources"])
    return stats


def _seqkd_pairs(cfg: RunConfig, run_dir: Path, original):
    """student-seqkd's training pairs (seqkd.train_on), generating the distilled corpus first when needed."""
    from .seqkd import read_distilled, training_pairs

    if cfg.seqkd.train_on == "original":
        return list(original)
    generate_labels(cfg, run_dir)
    return training_pairs(original, read_distilled(run_dir / "distilled"), cfg.seqkd.train_on,
                          cfg.seqkd.mix_ratio, seed=cfg.student_train.seed)


def distill(cfg: RunConfig, run_dir: Path, names: tuple[str, ...] | None = None, resume: bool = False) -> dict:
    """Train each named student: ``student-baseline`` on references only, ``student-kd`` with the teacher,
    ``student-seqkd`` on the teacher's translations (default: :func:`student_names`).

    Returns ``{name: trainer}`` for the students trained now (their callbacks include the monitor).
    """
    from .data.corpus import load_splits
    from .models.build import check_same_vocabulary, derive_student, load_seq2seq
    from .teachers import EnsembleTeacher, LiveTeacher
    from .training import train_seq2seq

    _require_teacher(run_dir)
    todo = student_names(cfg) if names is None else names
    if "causal" in (cfg.teacher.kind, cfg.student.kind):  # prompted causal LMs (teacher, student or both)
        from .causal import distill_causal

        return distill_causal(cfg, run_dir, todo, resume)
    splits = load_splits(run_dir / "data")
    tokenizer = load_tokenizer(run_dir)
    if cfg.distill.teachers and "student-kd" in todo and not is_complete(run_dir / "student-kd"):
        _check_ensemble_vocabularies(cfg.distill.teachers, tokenizer)  # before any student trains
    trainers = {}
    for name in todo:
        if name not in STUDENTS and name != SEQKD_STUDENT:
            raise RunDirError(f"unknown student '{name}'; choose from {', '.join([*STUDENTS, SEQKD_STUDENT])}")
        out = run_dir / name
        if is_complete(out):
            log.info("%s: complete, skipped", name)
            continue
        train_pairs, uses_teacher = splits.train, STUDENTS.get(name)
        if name == SEQKD_STUDENT:  # the teacher's translations as labels; the live teacher only with token KD
            train_pairs, uses_teacher = _seqkd_pairs(cfg, run_dir, splits.train), cfg.seqkd.with_token_kd
        teacher_model, teacher_tok = load_seq2seq(run_dir / "teacher")
        check_same_vocabulary(teacher_tok, tokenizer, teacher_model, where=f"teacher in {run_dir / 'teacher'}")
        # Every student starts from the same derived weights, so its training signal is the only difference.
        student = derive_student(teacher_model, cfg.student, seed=cfg.student_train.seed)
        if uses_teacher and cfg.distill.teacher_cache and name != SEQKD_STUDENT:
            teacher = _cached_teacher(cfg, run_dir, splits.train, tokenizer)
        elif uses_teacher and cfg.distill.teachers and name == "student-kd":  # only the listed teachers
            teacher = EnsembleTeacher.load(cfg.distill.teachers, tokenizer, student, cfg.distill.ensemble_weights,
                                           bf16=cfg.student_train.bf16)
            log.info("%s: learning from an ensemble of %d teachers (distill.teachers)", name, len(teacher.teachers))
        else:  # (the cache holds the teacher on the references, not on the distilled targets: live teacher)
            teacher = LiveTeacher(teacher_model, bf16=cfg.student_train.bf16) if uses_teacher else None
        distill_cfg = cfg.distill if uses_teacher else None
        teacher_params = teacher_model.num_parameters()
        if name == SEQKD_STUDENT and not uses_teacher:  # the monitor runs the teacher: not while seq-KD trains
            callbacks, teacher_model = [], None
            log.info("%s: %d training pairs (seqkd.train_on=%s); teacher released, the monitor is off", name,
                     len(train_pairs), cfg.seqkd.train_on)
        else:
            callbacks = _monitor_callbacks(cfg, run_dir, name, teacher_model, tokenizer, splits)
        log.info("%s: training %s parameters (teacher has %s)", name, f"{student.num_parameters():,}",
                 f"{teacher_params:,}")
        started = time.time()
        train, train_cfg = train_seq2seq, cfg.student_train
        if cfg.lora.students:  # adapters on the derived student; out holds the merged model and adapter/
            from functools import partial

            from .lora import lora_train_config, train_lora

            train, train_cfg = partial(train_lora, cfg=cfg.lora), lora_train_config(cfg.student_train, cfg.lora)
        trainers[name] = train(student, tokenizer, train_pairs, _dev_subset(cfg, splits), train_cfg,
                               out_dir=out, log_dir=run_dir / "tb" / name, max_tokens=cfg.data.max_tokens,
                               teacher=teacher, distill=distill_cfg, resume=resume, callbacks=callbacks)
        for monitor in callbacks:  # what the monitor saw, for the report's panel history
            (run_dir / "monitor").mkdir(exist_ok=True)
            monitor.save(run_dir / "monitor" / f"{name}.json")
        mark_complete(out, seconds=round(time.time() - started, 1))
    return trainers


def distill_progressive(cfg: RunConfig, run_dir: Path, resume: bool = False) -> list[dict]:
    """Progressive distillation: the chain teacher -> progressive/stage-k -> student-progressive, each stage taught
    by the previous one and evaluated (see :mod:`distilmt.progressive`). Returns one record per stage."""
    from .progressive import train_chain

    _require_teacher(run_dir)
    return train_chain(cfg, run_dir, run_dir / "progressive", run_dir / PROGRESSIVE_STUDENT, resume=resume)


def _check_ensemble_vocabularies(directories: list, tokenizer) -> None:
    """Refuse (ModelError naming the directory) an ensemble teacher whose tokenizer is not the run's, reading only
    the tokenizers, so a mismatch stops the run before the baseline trains; EnsembleTeacher.load checks the models."""
    from transformers import AutoTokenizer

    from .models.build import ModelError, check_same_vocabulary

    for directory in directories:
        if not (Path(directory) / "config.json").is_file():
            raise ModelError(f"{directory}: distill.teachers lists it but it is not a Hugging Face model directory "
                             "(no config.json); fix the path or remove it from distill.teachers")
        try:
            teacher_tokenizer = AutoTokenizer.from_pretrained(str(directory))
        except Exception as exc:  # noqa: BLE001 - transformers raises many kinds here
            raise ModelError(f"{directory}: no usable tokenizer saved next to the model ({exc.__class__.__name__}); "
                             "save the tokenizer into the same directory") from None
        check_same_vocabulary(teacher_tokenizer, tokenizer, where=f"teacher in {directory}")


def _dev_subset(cfg: RunConfig, splits):
    n = cfg.data.max_eval_sentences
    return splits.dev[:n] if n else splits.dev


def test_subset(cfg: RunConfig, splits) -> list:
    """The test pairs the final evaluation uses: the first ``data.max_test_sentences`` (0 = all)."""
    n = cfg.data.max_test_sentences
    return list(splits.test[:n] if n else splits.test)


def _monitor_callbacks(cfg: RunConfig, run_dir: Path, name: str, teacher_model, tokenizer, splits) -> list:
    if not cfg.monitor.enabled:
        return []
    import dataclasses
    import os

    from .monitor import DistillationMonitor, select_samples

    monitor_cfg = cfg.monitor
    if os.environ.get("DISTILMT_QUIET"):  # `distilmt --quiet`: plain lines without changing the run's config
        monitor_cfg = dataclasses.replace(monitor_cfg, quiet=True)
    samples = select_samples(splits.dev, monitor_cfg.num_samples)
    return [DistillationMonitor(teacher_model, tokenizer, samples, monitor_cfg, log_dir=str(run_dir / "tb" / name),
                                stream=_LogStream("distilmt.monitor"))]


class _LogStream:
    """A text stream that turns each written line into a log record (so plain monitor lines reach run.log)."""

    def __init__(self, name: str):
        self.log = logging.getLogger(name)

    def write(self, text: str) -> None:
        for line in text.splitlines():
            if line.strip():
                self.log.info(line)

    def flush(self) -> None:
        pass


def evaluate(cfg: RunConfig, run_dir: Path,
             models: tuple[str, ...] = ("teacher", TEACHER_LORA, *STUDENTS, SEQKD_STUDENT, PROGRESSIVE_STUDENT),
             test_sets=()) -> list[dict]:
    """Translate the test set with every model, measure quality, health, size and speed; write metrics.

    ``test_sets`` (evaluation.testsets.TestSet) are scored too, one column group each."""
    from .data.corpus import load_splits
    from .evaluation.compare import evaluate_models, write_csv, write_json, write_translations
    from .export import export_ctranslate2

    splits = load_splits(run_dir / "data")
    test = test_subset(cfg, splits)
    entries = [(name, run_dir / name) for name in models if is_complete(run_dir / name)]
    causal = [name for name, path in entries if _is_causal(path)]
    for name in causal:  # a causal LM is opened with its prompt.json (written by the stage that saved it)
        if not (run_dir / name / "prompt.json").is_file():
            from .causal import save_prompt

            save_prompt(run_dir / name, cfg.prompt, cfg.data)
    if not entries:
        raise RunDirError(f"{run_dir}: no trained model to evaluate yet; run `distilmt run --run-dir {run_dir}`")
    if cfg.eval.export_ct2 and is_complete(run_dir / "student-kd") and "student-kd" not in causal:  # (seq2seq only)
        ct2_dir = run_dir / "export" / "student-kd-ct2-int8"
        if not is_complete(ct2_dir):
            export_ctranslate2(run_dir / "student-kd", ct2_dir, quantization="int8", force=True)
            mark_complete(ct2_dir)
        entries.append(("student-kd-ct2-int8", ct2_dir))
    references = [t for _, t in test]
    result = evaluate_models(entries, [s for s, _ in test], references, cfg.data.target_lang,
                             reference_name="teacher", num_beams=cfg.eval.num_beams,
                             batch_size=cfg.eval.batch_size, max_new_tokens=cfg.eval.max_new_tokens,
                             speed_sentences=cfg.eval.speed_sentences, semantic=cfg.eval.semantic,
                             direction=cfg.data.direction,
                             test_sets=[t.head(cfg.data.max_test_sentences) for t in test_sets])
    extra = {"test_sets": result.set_info()}
    if {"student-baseline", "student-kd"} <= result.hyps.keys():  # is KD's gain over its twin more than luck?
        from .evaluation.metrics import paired_bootstrap

        extra["kd_vs_baseline"] = paired_bootstrap(result.hyps["student-baseline"], result.hyps["student-kd"],
                                                   references, cfg.data.target_lang)
    write_json(result.rows, run_dir / "metrics.json", **extra)
    write_csv(result.rows, run_dir / "metrics.csv")
    write_translations(result, run_dir / "translations.json")
    return result.rows


def _is_causal(path: Path) -> bool:
    from .causal import is_causal_dir

    return is_causal_dir(path)


def compare(models: list[str], out_dir: str | Path, test_pairs: list[tuple[str, str]], target_lang: str,
            reference: str | None = None, num_beams: int = 4, speed_sentences: int = 64, direction: str = "",
            test_sets=()) -> list[dict]:
    """Evaluate any HF / CTranslate2 model directories on a test set; write comparison.json/csv/md, report.

    ``models`` are ``DIR`` or ``NAME=DIR``; the reference row (default: the first) anchors compression,
    speed-up and quality retention. ``test_pairs`` are in ``direction`` ("SRC-TGT", "" if unknown);
    ``test_sets`` (evaluation.testsets.TestSet) are scored too, one column group each.
    """
    from .evaluation.compare import evaluate_models, to_markdown, write_csv, write_json, write_translations
    from .evaluation.report import write_report

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
                             test_sets=test_sets)
    rows = result.rows
    write_json(rows, out_dir / "comparison.json", test_sets=result.set_info())
    write_csv(rows, out_dir / "comparison.csv")
    (out_dir / "comparison.md").write_text(to_markdown(rows), encoding="utf-8")
    write_translations(result, out_dir / "translations.json")
    write_report(out_dir, title="distilmt comparison", metrics_file="comparison.json")
    return rows


def report(cfg: RunConfig, run_dir: Path) -> Path:
    from .evaluation.report import write_report

    return write_report(run_dir, cfg)


def run(cfg: RunConfig, run_dir: str | Path, resume: bool = False) -> list[dict]:
    """The main job: everything above, in order, into one run directory."""
    run_dir = Path(run_dir)
    cfg = open_run(run_dir, cfg)
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
    rows = evaluate(cfg, run_dir)
    report(cfg, run_dir)
    log.info("run finished in %.1f min", (time.time() - started) / 60)
    return rows


def quick_visual_distill(run_dir: str | Path = "runs/visual", preset: str = "quick", overrides: list[str] = (),
                         **monitor_settings):
    """One call: prepare data, train (or load) the teacher, distil a KD student with the monitor on.

    ``monitor_settings`` set MonitorConfig fields (e.g. ``sample_frequency=20, language="zh"``). Returns
    the :class:`~distilmt.monitor.DistillationMonitor`, whose ``stats()`` and ``history`` hold what it saw.
    """
    from .monitor import DistillationMonitor

    settings = [*overrides, "monitor.enabled=true", *(f"monitor.{k}={v}" for k, v in monitor_settings.items())]
    cfg = open_run(run_dir, load_config(preset, overrides=settings))
    run_dir = Path(run_dir)
    prepare_data(cfg, run_dir)
    train_teacher(cfg, run_dir)
    trainer = distill(cfg, run_dir, ("student-kd",)).get("student-kd")
    if trainer is None:
        raise RunDirError(f"{run_dir}: the KD student is already trained; use a new run_dir to watch a new one")
    return next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, DistillationMonitor))


__all__ = ["quick_visual_distill", "ConfigError", "RunDirError", "cache_teacher", "distill", "distill_progressive", "evaluate",
           "generate_labels", "student_names", "open_run", "prepare_data", "report", "run",
           "train_teacher", "train_teacher_lora"]
