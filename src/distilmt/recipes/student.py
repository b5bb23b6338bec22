"""The one path that trains a student: every command that trains one (``distill``, ``methods``, ``study``,
``progressive``) calls :func:`train_student`.

    derive it from its base model (or load a causal-LM student) -> its teacher signal from the config (none,
    live, teacher cache, ensemble, causal) -> LoRA adapters or not -> the monitor -> the trainer -> save, mark complete

so one configuration gives the same student whichever command trains it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from transformers import AutoTokenizer

from ..config import RunConfig
from ..data.corpus import load_splits
from ..data.prompt import TranslationPrompt
from ..errors import ConfigError, ModelError, RunDirError
from ..models.build import build_model, derive_student
from ..models.loading import causal_tokenizer, load_causal, load_seq2seq
from ..models.translators import save_prompt
from ..models.trim import trim_student
from ..models.vocab import check_same_vocabulary, check_shared_vocabulary
from ..monitor import DistillationMonitor, select_samples
from ..ranks import is_main, main_first, on_main
from ..rundir import is_complete, load_tokenizer, mark_complete, require_teacher, teacher_fingerprint
from ..teachers.cache import CachedTeacher
from ..teachers.ensemble import EnsembleTeacher
from ..teachers.labels import read_distilled, training_pairs
from ..teachers.signal import CausalTeacher, LiveTeacher, VocabMappedTeacher
from ..training.loop import train_seq2seq
from ..training.lora import lora_train_config, train_lora
from ..training.precision import resolve_precision
from .stages import (
    SEQKD_STUDENT,
    STUDENTS,
    cache_teacher,
    dev_subset,
    generate_labels,
    student_names,
    teacher_placement,
)

log = logging.getLogger("distilmt")

CAUSAL_UNSUPPORTED = {"hidden_weight": 0.0, "attention_weight": 0.0, "on_policy_ratio": 0.0, "mutual": False,
                      "teacher_cache": False}
"""Distillation settings a causal-LM student cannot use yet, with the value that turns each off."""


def train_student(cfg: RunConfig, run_dir: Path, name: str, out: Path, train_pairs: Sequence[tuple[str, str]], *,
                  teacher_dir: Path | None = None, base_dir: Path | None = None, student=None,
                  lora: bool | None = None, monitor: bool = True, log_dir: Path | None = None, resume: bool = False,
                  complete: bool = True, **complete_info):
    """Train the student ``name`` into ``out`` on ``train_pairs`` and return its trainer.

    * the student: ``student`` when given (a model built by the caller), a causal LM loaded from ``student.path``
      (``student.kind=causal``), or derived by ``student.*`` from ``base_dir`` (default ``run_dir/teacher``), with
      seed ``student_train.seed``: every student of a run starts from the same weights; with ``student.trim_vocab``
      it keeps only the tokens of the run's training pairs and ``train_pairs`` (:mod:`distilmt.models.trim`), its
      tokenizer is saved in ``out`` and its teacher signal is mapped to the kept vocabulary
      (:class:`~distilmt.teachers.signal.VocabMappedTeacher`), without the monitor;
    * its teacher signal (:func:`teacher_signal`): none when ``teacher_dir`` is None (no KD), else from
      ``teacher_dir`` as the config says (teacher cache, ensemble, causal or a live model);
    * LoRA adapters on it when ``lora`` (default ``lora.students``), else full training;
    * the monitor (``monitor.enabled``) when ``monitor`` (a causal teacher or student prompted to translate);
    * ``out`` is marked complete (with ``complete_info``) unless ``complete=False``.
    """
    run_dir, out, pairs = Path(run_dir), Path(out), train_pairs
    resolve_precision(cfg.student_train.precision, "student_train.precision")  # refused before anything is loaded
    splits = load_splits(run_dir / "data")
    causal = cfg.student.kind == "causal"
    if causal:
        model, tokenizer = load_causal(cfg.student.path, role="student")
    else:
        tokenizer = load_tokenizer(run_dir)
        model = student if student is not None else derive_student(_base_model(cfg, run_dir, base_dir, tokenizer),
                                                                   cfg.student, seed=cfg.student_train.seed)
    signal = teacher_signal(cfg, run_dir, teacher_dir, tokenizer, model, pairs) if teacher_dir is not None else None
    if cfg.student.trim_vocab and not causal:  # the student keeps the corpus' tokens; the teacher is mapped to them
        if student is not None:
            raise ConfigError("student.trim_vocab: not supported for a student built by the caller (progressive "
                              "distillation) yet; set student.trim_vocab=false")
        extra = [] if pairs == splits.train else pairs  # e.g. the distilled corpus of student-seqkd
        with main_first(f"trimming {name}'s vocabulary"):  # it saves the trimmed tokenizer in out: rank 0 first
            model, tokenizer, vocab_map = trim_student(model, tokenizer, splits.train, out, extra_pairs=extra)
        signal = VocabMappedTeacher(signal, vocab_map) if signal is not None else None
        if monitor and cfg.monitor.enabled:
            log.info("%s: the monitor is off for a trimmed-vocabulary student (it compares full vocabularies)", name)
        monitor = False
    distill = cfg.distill if signal is not None else None
    log_dir = Path(log_dir) if log_dir is not None else run_dir / "tb" / name
    live = signal.model if isinstance(signal, LiveTeacher) else None  # the monitor shares it instead of a 2nd copy
    callbacks = monitor_callbacks(cfg, run_dir / "tb" / name, teacher_dir or run_dir / "teacher", tokenizer,
                                  splits, model, teacher=live) if monitor else []
    log.info("%s: training %s parameters on %d pairs%s", name, f"{model.num_parameters():,}", len(pairs),
             f", taught by {teacher_dir}" if signal is not None else " (no teacher)")
    common = dict(out_dir=out, log_dir=log_dir, max_tokens=cfg.data.max_tokens, resume=resume, name=name)
    started = time.time()
    if causal:
        prompt = TranslationPrompt.from_config(tokenizer, cfg.prompt, cfg.data)
        trainer = train_causal(model, prompt, pairs, cfg.student_train, dev_pairs=dev_subset(cfg, splits),
                               teacher=signal, distill=distill, callbacks=callbacks, **common)
        if is_main():  # how to prompt it: evaluate/translate open it with this
            save_prompt(out, cfg.prompt, cfg.data)
    elif cfg.lora.students if lora is None else lora:  # out holds the merged model and adapter/
        trainer = train_lora(model, tokenizer, pairs, dev_subset(cfg, splits),
                             lora_train_config(cfg.student_train, cfg.lora), cfg.lora, teacher=signal,
                             distill=distill, callbacks=callbacks, **common)
    else:
        trainer = train_seq2seq(model, tokenizer, pairs, dev_subset(cfg, splits), cfg.student_train, teacher=signal,
                                distill=distill, callbacks=callbacks, **common)
    seconds = round(time.time() - started, 1)

    def finish() -> None:  # under torchrun: rank 0, once every rank has trained (DDP) and rank 0 has saved
        for watcher in callbacks:  # what the monitor saw, for the report's panel history
            (run_dir / "monitor").mkdir(exist_ok=True)
            watcher.save(run_dir / "monitor" / f"{name}.json")
        if complete:
            mark_complete(out, drop_checkpoints=not cfg.student_train.keep_checkpoints, seconds=seconds,
                          **complete_info)

    on_main(finish, f"saving {name}")
    return trainer


def _base_model(cfg: RunConfig, run_dir: Path, base_dir: Path | None, tokenizer):
    """The seq2seq model a student is derived from: ``base_dir`` (default the run's teacher), or — for a causal
    teacher, whose vocabulary a seq2seq student does not share — a fresh model of shape ``teacher.*``."""
    if cfg.teacher.kind == "causal" and base_dir is None:
        return build_model(cfg.teacher, tokenizer, seed=cfg.student_train.seed)
    base_dir = base_dir or run_dir / "teacher"
    model, base_tokenizer = load_seq2seq(base_dir)
    check_same_vocabulary(base_tokenizer, tokenizer, model, where=f"teacher in {base_dir}")
    return model


def teacher_signal(cfg: RunConfig, run_dir: Path, teacher_dir: Path, tokenizer, student, pairs):
    """Where the student's KD signal comes from, from the config:

    * a causal teacher and a causal student: :class:`CausalTeacher` over their shared real vocabulary;
    * a causal teacher and a seq2seq student (or the reverse): refused, they share no vocabulary;
    * ``distill.teacher_cache`` with the run's teacher on the run's training pairs: :class:`CachedTeacher`
      (the cache is built first when missing; it holds the teacher on the references, so other pairs — e.g. the
      distilled corpus — get the live teacher);
    * ``distill.teachers``: an :class:`EnsembleTeacher` of exactly those directories;
    * else the model in ``teacher_dir`` as a :class:`LiveTeacher` (its vocabulary checked against the student's).
    """
    precision = resolve_precision(cfg.student_train.precision, "student_train.precision")  # the student's autocast
    bf16, fp16 = precision == "bf16", precision == "fp16"
    if cfg.teacher.kind != cfg.student.kind:
        raise ModelError(f"token-level KD from a {cfg.teacher.kind} teacher to a {cfg.student.kind} student needs one "
                         "vocabulary; use sequence-level KD instead (seqkd.enabled=true, seqkd.with_token_kd=false), "
                         "which works across tokenizers")
    place = teacher_placement(cfg)  # teacher.device / teacher.inference_dtype
    placed = "device" in place  # stays on teacher.device instead of following the student
    if cfg.student.kind == "causal":
        teacher_model, teacher_tokenizer = load_causal(teacher_dir, **place)
        size = check_shared_vocabulary(teacher_tokenizer, tokenizer, teacher_model, student,
                                       f"the teacher {cfg.teacher.path}", f"the student {cfg.student.path}")
        return CausalTeacher(teacher_model, size, bf16=bf16, fp16=fp16, placed=placed)
    run_teacher = Path(teacher_dir) == Path(run_dir) / "teacher"
    if cfg.distill.teacher_cache and run_teacher and pairs == load_splits(run_dir / "data").train:
        cache_teacher(cfg, run_dir)
        return CachedTeacher.open(run_dir / "teacher-cache", pairs, tokenizer, teacher_fingerprint(teacher_dir),
                                  cfg.data.max_tokens)
    if cfg.distill.teachers:
        check_ensemble_vocabularies(cfg.distill.teachers, tokenizer)
        teacher = EnsembleTeacher.load(cfg.distill.teachers, tokenizer, student, cfg.distill.ensemble_weights,
                                       bf16=bf16, fp16=fp16, place=place)
        log.info("learning from an ensemble of %d teachers (distill.teachers)", len(teacher.teachers))
        return teacher
    teacher_model, teacher_tokenizer = load_seq2seq(teacher_dir, **place)
    check_same_vocabulary(teacher_tokenizer, tokenizer, teacher_model, student, where=f"teacher in {teacher_dir}")
    if place:
        log.info("live teacher on %s, weights %s (teacher.device, teacher.inference_dtype)",
                 getattr(teacher_model, "hf_device_map", None) or teacher_model.device, teacher_model.dtype)
    return LiveTeacher(teacher_model, bf16=bf16, fp16=fp16, placed=placed)


def check_ensemble_vocabularies(directories: list, tokenizer) -> None:
    """Refuse (ModelError naming the directory) an ensemble teacher whose tokenizer is not the run's, reading only
    the tokenizers, so a mismatch stops the run before any student trains; EnsembleTeacher.load checks the models."""
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


def train_causal(model, prompt: TranslationPrompt, train_pairs, cfg, out_dir, log_dir, max_tokens: int,
                 teacher=None, distill=None, resume: bool = False, callbacks=None, name: str = "",
                 dev_pairs: Sequence[tuple[str, str]] = ()):
    """Train a causal LM student on prompted pairs (CE on the target tokens, plus token-level KD from ``teacher``,
    a :class:`~distilmt.teachers.signal.CausalTeacher`, when given); saved to ``out_dir`` with its tokenizer.

    With ``dev_pairs`` it is evaluated as a seq2seq student is (``train.eval_every_epoch``, ``eval_steps``,
    ``eval_beams``, ``max_eval_tokens``, ``early_stopping_patience``): dev BLEU/chrF/distinct from its own translations through
    ``prompt``, and the best checkpoint by dev BLEU is the one saved. Without them there is no evaluation during
    training and the last weights are saved."""
    if distill is not None:
        for key, off in CAUSAL_UNSUPPORTED.items():
            if getattr(distill, key) != off:
                raise ConfigError(f"distill.{key}: not supported for a causal-LM student yet; set it to {off}")
        if distill.teachers:
            raise ConfigError("distill.teachers: an ensemble is not supported for a causal-LM student yet; set it "
                              "to []")
    return train_seq2seq(model, prompt.tokenizer, train_pairs, list(dev_pairs), cfg, out_dir, log_dir, max_tokens,
                         teacher=teacher, distill=distill, resume=resume, callbacks=callbacks, name=name,
                         prompt=prompt)


def monitor_callbacks(cfg: RunConfig, log_dir: Path, teacher_dir: Path, tokenizer, splits, student=None,
                      teacher=None) -> list:
    """The visual monitor (``monitor.enabled``) watching the student against the teacher in ``teacher_dir``, on
    ``monitor.num_samples`` dev sentences. A causal-LM teacher or student is prompted as ``prompt.*`` says; the KL
    is taken when both models read one vocabulary (two seq2seq models, or two causal LMs of one tokenizer).
    ``teacher``: that teacher's model when the KD signal already holds it (a live teacher), used as it is instead
    of loading a second copy (a shipped NLLB or Qwen teacher is gigabytes); else it is loaded from ``teacher_dir``
    (a teacher cache or an ensemble holds no such model)."""
    if not cfg.monitor.enabled:
        return []
    monitor_cfg = cfg.monitor
    if os.environ.get("DISTILMT_QUIET"):  # `distilmt --quiet`: plain lines without changing the run's config
        monitor_cfg = dataclasses.replace(monitor_cfg, quiet=True)
    prompts, shared_vocab = {}, 0
    if cfg.teacher.kind == "causal":
        teacher_model, teacher_tokenizer = ((teacher, causal_tokenizer(teacher_dir)) if teacher is not None
                                            else load_causal(teacher_dir))
        prompts["teacher_prompt"] = TranslationPrompt.from_config(teacher_tokenizer, cfg.prompt, cfg.data)
    else:
        teacher_model = teacher if teacher is not None else load_seq2seq(teacher_dir)[0]
    if cfg.student.kind == "causal":
        prompts["student_prompt"] = TranslationPrompt.from_config(tokenizer, cfg.prompt, cfg.data)
        if cfg.teacher.kind == "causal":
            try:
                shared_vocab = check_shared_vocabulary(teacher_tokenizer, tokenizer, teacher_model, student)
            except ModelError:  # two tokenizers: the monitor compares the translations only
                shared_vocab = 0
    samples = select_samples(splits.dev, monitor_cfg.num_samples)
    return [DistillationMonitor(teacher_model, tokenizer, samples, monitor_cfg, log_dir=str(log_dir),
                                stream=LogStream("distilmt.monitor"), shared_vocab=shared_vocab, **prompts)]


class LogStream:
    """A text stream that turns each written line into a log record (so plain monitor lines reach run.log)."""

    def __init__(self, name: str):
        self.log = logging.getLogger(name)

    def write(self, text: str) -> None:
        for line in text.splitlines():
            if line.strip():
                self.log.info(line)

    def flush(self) -> None:
        pass


def seqkd_pairs(cfg: RunConfig, run_dir: Path, original):
    """student-seqkd's training pairs (seqkd.train_on), generating the distilled corpus first when needed."""
    if cfg.seqkd.train_on == "original":
        return original
    generate_labels(cfg, run_dir)
    return training_pairs(original, read_distilled(run_dir / "distilled"), cfg.seqkd.train_on,
                          cfg.seqkd.mix_ratio, seed=cfg.student_train.seed)


def distill(cfg: RunConfig, run_dir: Path, names: tuple[str, ...] | None = None, resume: bool = False) -> dict:
    """Train each named student: ``student-baseline`` on references only, ``student-kd`` with the teacher,
    ``student-seqkd`` on the teacher's translations (default: :func:`~distilmt.recipes.stages.student_names`).

    Returns ``{name: trainer}`` for the students trained now (their callbacks include the monitor).
    """
    require_teacher(run_dir)
    todo = student_names(cfg) if names is None else names
    unknown = [n for n in todo if n not in STUDENTS and n != SEQKD_STUDENT]
    if unknown:
        raise RunDirError(f"unknown student '{unknown[0]}'; choose from {', '.join([*STUDENTS, SEQKD_STUDENT])}")
    splits = load_splits(run_dir / "data")
    if cfg.distill.teachers and "student-kd" in todo and not is_complete(run_dir / "student-kd"):
        check_ensemble_vocabularies(cfg.distill.teachers, load_tokenizer(run_dir))  # before any student trains
    trainers = {}
    for name in todo:
        out = run_dir / name
        if is_complete(out):
            log.info("%s: complete, skipped", name)
            continue
        pairs, uses_teacher = splits.train, STUDENTS.get(name)
        if name == SEQKD_STUDENT:  # the teacher's translations as labels; the live teacher only with token KD
            pairs, uses_teacher = seqkd_pairs(cfg, run_dir, splits.train), cfg.seqkd.with_token_kd
        if uses_teacher and cfg.teacher.kind != cfg.student.kind:
            raise ModelError(f"{name}: token-level KD from a {cfg.teacher.kind} teacher to a {cfg.student.kind} "
                             "student needs one vocabulary; use sequence-level KD instead (seqkd.enabled=true, "
                             "seqkd.with_token_kd=false), which works across tokenizers")
        # the monitor runs the teacher next to the student: not while seq-KD trains on labels alone
        trainers[name] = train_student(cfg, run_dir, name, out, pairs,
                                       teacher_dir=run_dir / "teacher" if uses_teacher else None,
                                       monitor=not (name == SEQKD_STUDENT and not uses_teacher), resume=resume)
    return trainers
