"""The teacher-side stages and what every recipe shares: the corpus and tokenizer, the teacher (trained here or
taken as it is), its LoRA fine-tune, its cache of top-k probabilities and its translations of the training sources
(sequence-level KD labels), plus the run's dev and test subsets and the names of its model directories.

Under ``torchrun --nproc_per_node N`` every rank calls every stage (:mod:`distilmt.ranks`): the data, the tokenizer
and a CTranslate2 conversion of the teacher are made once by rank 0 while the others wait; the teacher cache and
the distilled corpus are split by shard (rank r builds shards r, r + N, ...) and assembled by rank 0; training is
the Trainer's DDP; rank 0 writes every ``.complete`` marker."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path

import torch
from transformers import AutoTokenizer

from ..config import RunConfig, SeqKDConfig
from ..data.corpus import load_splits, prepare_data as prepare_splits
from ..data.languages import resolve as resolve_languages, setup_of
from ..data.store import store_dir, token_store
from ..data.tokenizer import tokenizer_fingerprint, train_tokenizer
from ..errors import CacheError, ConfigError, ExportError, LabelsError
from ..export import export_ctranslate2
from ..models.build import build_model
from ..models.loading import first_line, load_causal, load_seq2seq
from ..models.translators import Ct2Translator, ct2_default_device, default_inter_threads, save_prompt
from ..ranks import barrier, gather, local_device, local_rank, main_first, my_shards, on_main, world_size
from ..rundir import is_complete, load_tokenizer, mark_complete, require_teacher, teacher_fingerprint
from ..teachers.cache import TeacherCache, build_teacher_cache, cache_fingerprint, finish_teacher_cache
from ..teachers.labels import (
    MANIFEST,
    assemble_distilled,
    complete_stats,
    labels_fingerprint,
    labels_teacher,
    write_label_shards,
)
from ..training.loop import train_seq2seq
from ..training.lora import lora_train_config, train_lora
from ..training.precision import resolve_precision

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


# -- stages -------------------------------------------------------------------------------------------
def prepare_data(cfg: RunConfig, run_dir: Path):
    """Corpus splits (built-in or the user's files) and the tokenizer (trained here or the teacher's).

    Under torchrun rank 0 builds them while the others wait, then the others read what it wrote."""

    with main_first("preparing the data"):
        splits = prepare_splits(cfg.data, run_dir / "data")
        tok_dir = run_dir / "tokenizer"
        if not is_complete(tok_dir):
            if cfg.teacher.path and cfg.teacher.kind == "seq2seq":  # a causal teacher keeps its own tokenizer

                _, tokenizer = load_seq2seq(cfg.teacher.path)
            else:
                tokenizer = train_tokenizer(tokenizer_texts(splits.train, cfg.data.tokenizer_pairs),
                                            cfg.data.vocab_size, tok_dir)
            # the run's language codes, source prefix and target token travel in the tokenizer (data.languages)
            resolve_languages(cfg.data, tokenizer).apply(tokenizer).save_pretrained(str(tok_dir))
            mark_complete(tok_dir)
        if cfg.student.kind == "seq2seq" or cfg.teacher.kind == "seq2seq":  # what training reads: tokenised once
            started = time.time()
            tokenizer = load_tokenizer(run_dir)
            tokens = token_store(splits.train, tokenizer)
            log.info("data: %d training pairs tokenised in %s (%.0fs)", len(tokens),
                     store_dir(splits.train, tokenizer).name, time.time() - started)
    return splits


def tokenizer_texts(train, limit: int):
    """Both sides of the training pairs a tokenizer is trained on: all of them, or ``limit`` pairs spread evenly
    over the split (``data.tokenizer_pairs``: SentencePiece holds every sentence it learns from in memory)."""
    n = len(train)
    pairs = train if not limit or n <= limit else (train[i * n // limit] for i in range(limit))
    return (text for pair in pairs for text in pair)


def check_precision(cfg: RunConfig) -> dict[str, str]:
    """The precision each training of the run uses on this device (``teacher_train`` only when the teacher is
    trained here), ``auto`` resolved; a value the device cannot run is one ConfigError naming its key, before any
    stage has started."""
    sections = ("student_train",) if cfg.teacher.path else ("teacher_train", "student_train")
    return {s: resolve_precision(getattr(cfg, s).precision, f"{s}.precision") for s in sections}


def train_teacher(cfg: RunConfig, run_dir: Path, resume: bool = False):
    """Train the teacher from scratch (under torchrun: with DDP, saved and marked by rank 0), or take the user's
    teacher directory as it is (rank 0 saves it)."""

    out = run_dir / "teacher"
    if is_complete(out):
        log.info("teacher: complete, skipped")
        return
    if cfg.teacher.path:
        on_main(lambda: _take_teacher(cfg, out), "saving the teacher")
        return
    precision = resolve_precision(cfg.teacher_train.precision, "teacher_train.precision")
    splits = load_splits(run_dir / "data")
    tokenizer = load_tokenizer(run_dir)
    model = build_model(cfg.teacher, tokenizer, seed=cfg.teacher_train.seed)
    log.info("teacher: training %s parameters (%s)", f"{model.num_parameters():,}", precision)
    started = time.time()
    train_seq2seq(model, tokenizer, splits.train, dev_subset(cfg, splits), cfg.teacher_train, out,
                  run_dir / "tb" / "teacher", cfg.data.max_tokens, resume=resume)
    on_main(lambda: mark_complete(out, drop_checkpoints=not cfg.teacher_train.keep_checkpoints,
                                  seconds=round(time.time() - started, 1)), "saving the teacher")


def _take_teacher(cfg: RunConfig, out: Path) -> None:
    """The user's teacher (``teacher.path``) saved into ``out`` with the run's languages, marked complete."""
    if cfg.teacher.kind == "causal":

        model, tokenizer = load_causal(cfg.teacher.path)
    else:  # tokenizer and generation_config get the run's languages, and every model derived from it too
        model, tokenizer = load_seq2seq(cfg.teacher.path)
        languages = resolve_languages(cfg.data, tokenizer)
        languages.apply(tokenizer)
        languages.configure_generation(model, tokenizer)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    if cfg.teacher.kind == "causal":  # how to prompt it, for evaluate/translate/compare (prompt.json)
        save_prompt(out, cfg.prompt, cfg.data)
    mark_complete(out, source=cfg.teacher.path)


def teacher_placement(cfg: RunConfig) -> dict:
    """``device`` and ``dtype`` for loading the frozen teacher (``teacher.device``, ``teacher.inference_dtype``;
    see :func:`distilmt.models.loading.placement`); a GPU asked for on a machine without one is refused."""
    device = cfg.teacher.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"teacher.device: '{device}' but torch sees no CUDA GPU here; leave it empty (the "
                          "student's device) or set cpu")
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        raise ConfigError(f"teacher.device: '{device}' but torch sees {torch.cuda.device_count()} GPU(s) "
                          f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    dtype = cfg.teacher.inference_dtype
    return {key: value for key, value in (("device", device), ("dtype", dtype)) if value and value != "auto"}


def teacher_on_device(model_dir: Path, cfg: RunConfig | None = None):
    """A teacher model (seq2seq directory) for one pass over the training set: where ``teacher.device`` says
    (default: the GPU when there is one, this rank's under torchrun), weights as ``teacher.inference_dtype`` says."""
    place = teacher_placement(cfg) if cfg is not None else {}
    model, _ = load_seq2seq(model_dir, **place)
    return model if "device" in place else model.to(local_device())


def train_teacher_lora(cfg: RunConfig, run_dir: Path, resume: bool = False, out_dir: Path | None = None,
                       **complete_info) -> Path:
    """Fine-tune the teacher with LoRA adapters on the training pairs (``teacher-lora/``, or ``out_dir``: the merged
    model, its ``adapter/``); ``lora.teacher_steps`` updates at ``lora.learning_rate``, batches as ``teacher_train``.
    ``complete_info`` goes into the stage's ``.complete`` marker."""

    require_teacher(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / TEACHER_LORA
    if is_complete(out):
        log.info("%s: complete, skipped", TEACHER_LORA)
        return out
    splits = load_splits(run_dir / "data")
    model, tokenizer = load_seq2seq(run_dir / "teacher")
    train_cfg = lora_train_config(cfg.teacher_train, cfg.lora, max_steps=cfg.lora.teacher_steps,
                                  warmup_steps=cfg.lora.warmup_steps)
    started = time.time()
    train_lora(model, tokenizer, splits.train, dev_subset(cfg, splits), train_cfg, cfg.lora, out,
               out.parent / "tb" / out.name, cfg.data.max_tokens, base_path=run_dir / "teacher", resume=resume,
               name=TEACHER_LORA)
    on_main(lambda: mark_complete(out, drop_checkpoints=not cfg.teacher_train.keep_checkpoints,
                                  seconds=round(time.time() - started, 1), **complete_info), f"saving {TEACHER_LORA}")
    return out


def cache_teacher(cfg: RunConfig, run_dir: Path, rebuild: bool = False, on_shard=None) -> dict:
    """One pass of the frozen teacher over the training set, storing its top-k probabilities (``teacher-cache/``).

    Continues an interrupted build; a complete cache is checked against the run's data, tokenizer and teacher
    and skipped (a stale one is refused: ``rebuild=True`` deletes and rebuilds it). ``on_shard(done, total)`` is
    called after each shard this process wrote. Under torchrun rank r builds shards r, r + N, ... and rank 0 writes
    the stats and the marker once every rank is done. Returns the cache's stats.
    """


    require_teacher(run_dir)
    if cfg.teacher.kind == "causal":
        raise CacheError("cache-teacher: a causal-LM teacher (teacher.kind=causal) is not cached: the teacher cache "
                         "holds a seq2seq teacher's top-k probabilities for seq2seq students, and token-level KD "
                         "between causal LMs runs the teacher live (leave distill.teacher_cache=false)")
    out = run_dir / "teacher-cache"
    splits = load_splits(run_dir / "data")
    tokenizer = load_tokenizer(run_dir)
    teacher_id = teacher_fingerprint(run_dir / "teacher")
    if rebuild:
        with main_first("deleting the old teacher cache"):
            shutil.rmtree(out, ignore_errors=True)
    if is_complete(out):
        cache = TeacherCache(out, cache_fingerprint(splits.train, tokenizer, teacher_id, cfg.data.max_tokens))
        log.info("teacher-cache: complete, skipped")
        return cache.stats
    teacher_model = teacher_on_device(run_dir / "teacher", cfg)
    log.info("teacher-cache: top-%d teacher probabilities for %d training pairs%s", cfg.distill.cache_top_k,
             len(splits.train), f", shards split over {world_size()} processes" if world_size() > 1 else "")
    started = time.time()

    def shard_done(done: int, total: int) -> None:
        log.info("teacher-cache: shard %d/%d", done, total)
        if on_shard is not None:
            on_shard(done, total)

    build_teacher_cache(  # this rank's shards (all of them alone); finished below once every rank is done
        out, splits.train, tokenizer, teacher_model, teacher_id=teacher_id, max_tokens=cfg.data.max_tokens,
        top_k=cfg.distill.cache_top_k, dtype=cfg.distill.cache_dtype, shard_size=cfg.distill.cache_shard_size,
        batch_tokens=4 * cfg.student_train.batch_tokens, on_shard=shard_done, shards=my_shards())
    del teacher_model
    barrier()

    def finish() -> dict:
        stats = finish_teacher_cache(out)
        log.info("teacher-cache: %s target tokens, %.1f bytes per target token, %.1f MB in all, top-%d mass %.3f "
                 "(%.0fs)", f"{stats['n_tokens']:,}", stats["bytes_per_token"], stats["total_bytes"] / 1e6,
                 stats["k"], stats["mean_topk_mass"], time.time() - started)
        mark_complete(out, seconds=round(time.time() - started, 1))
        return stats

    return on_main(finish, "finishing the teacher cache")


def generate_labels(cfg: RunConfig, run_dir: Path, rebuild: bool = False, on_shard=None) -> dict:
    """The teacher translates the training sources (``distilled/``): the labels of sequence-level KD.

    Resumable shard by shard; a complete corpus made from the same sources, tokenizer, teacher and generation
    settings is skipped, a stale one refused (``rebuild=True`` deletes and rebuilds it). Under torchrun rank r
    translates shards r, r + N, ... and rank 0 assembles ``train.tsv`` and the stats once every rank is done (its
    throughput: all sentences over the slowest rank's time). Returns its stats.
    """


    require_teacher(run_dir)
    out = run_dir / "distilled"
    if rebuild:
        with main_first("deleting the old distilled corpus"):
            shutil.rmtree(out, ignore_errors=True)
    sources = [s for s, _ in load_splits(run_dir / "data").train]
    tokenizer = load_tokenizer(run_dir)
    teacher_id = teacher_fingerprint(run_dir / "teacher")
    with main_first("choosing the labels' engine"):  # rank 0 converts the teacher to CTranslate2 (once) if it must
        seqkd, load, reference = labels_engine(cfg, run_dir / "teacher", teacher_id, out)
    if cfg.teacher.kind == "causal":  # prompted with prompt.template, in its own tokenizer (distilmt.data.prompt)

        teacher_id, load = labels_teacher(cfg, run_dir / "teacher", teacher_id)
    fingerprint = labels_fingerprint(sources, tokenizer_fingerprint(tokenizer), teacher_id, seqkd)

    hint = f"rebuild it with `distilmt generate-labels --run-dir {run_dir} --rebuild`, or delete {out}"
    stats = complete_stats(out, seqkd, fingerprint, hint)
    if stats is None:  # this rank's shards (all of them alone), then rank 0 assembles once every rank is done
        done = gather(write_label_shards(out, sources, tokenizer, load, seqkd, fingerprint, hint, on_shard,
                                         shards=my_shards()))
        generated, seconds = sum(n for n, _ in done), max(s for _, s in done)  # the ranks translate side by side
        stats = on_main(lambda: assemble_distilled(out, sources, tokenizer, seqkd, generated, seconds, reference),
                        "assembling the distilled corpus")
    on_main(lambda: mark_complete(out, kept=stats["kept"], sources=stats["sources"]), "marking the labels complete")
    return stats


def labels_engine(cfg: RunConfig, teacher_dir: Path, teacher_id: str, out_dir: Path,
                  ) -> tuple[SeqKDConfig, Callable[[], object], Callable[[], object] | None]:
    """What decodes the teacher for ``out_dir``'s labels: ``(seqkd, load, reference)`` for
    :func:`~distilmt.teachers.labels.build_distilled`.

    ``seqkd`` is ``cfg.seqkd`` with ``engine`` and ``ct2_quantization`` resolved. ``auto`` keeps the engine (and
    quantization) of a corpus already begun in ``out_dir``; else it is ct2 unless :func:`ct2_obstacle` names a reason
    or the teacher does not convert (both logged), then hf. Quantization ``auto`` is int8 on a CPU, float16 on a GPU.
    With ct2 ``load()`` gives a :class:`Ct2Translator` of the teacher converted once (:func:`teacher_ct2`) and
    ``reference()`` the HF teacher the agreement check compares with; with hf ``load()`` gives the HF teacher (on
    the GPU when there is one) and ``reference`` is None. An explicit ct2 that cannot be is one LabelsError line.
    """
    seqkd = cfg.seqkd
    begun = _begun_settings(out_dir)
    engine = seqkd.engine if seqkd.engine != "auto" or begun is None else begun.get("engine", "hf")
    obstacle = ct2_obstacle(cfg, teacher_dir) if engine != "hf" else None
    if obstacle and engine == "ct2":
        began = f" ({out_dir} was begun with it)" if seqkd.engine == "auto" else ""
        raise LabelsError(f"seqkd.engine=ct2{began}: {obstacle}; set seqkd.engine=hf")
    quantization = seqkd.ct2_quantization
    if quantization == "auto" and engine != "hf" and not obstacle:
        began_ct2 = begun is not None and begun.get("engine") == "ct2"
        quantization = begun["ct2_quantization"] if began_ct2 else "float16" if ct2_default_device() == "cuda" else "int8"
    if engine == "auto":  # nothing begun yet: every shard is missing, so the conversion is needed now anyway
        try:
            if obstacle:
                raise ValueError(obstacle)
            teacher_ct2(teacher_dir, quantization, teacher_id)
            engine = "ct2"
        except CONVERSION_ERRORS as exc:
            log.info("generate-labels: not with CTranslate2 (%s); decoding with HF generate", first_line(exc))
            engine = "hf"

    def load_hf():
        return teacher_on_device(teacher_dir, cfg)

    if engine == "hf":
        return dataclasses.replace(seqkd, engine="hf"), load_hf, None

    def load_ct2() -> Ct2Translator:
        try:
            ct2_dir = teacher_ct2(teacher_dir, quantization, teacher_id)
        except CONVERSION_ERRORS as exc:
            raise LabelsError(f"seqkd.engine=ct2: the teacher in {teacher_dir} does not convert to CTranslate2 "
                              f"({first_line(exc)}); set seqkd.engine=hf") from None
        device = ct2_default_device()
        inter = 1 if device == "cuda" else default_inter_threads()
        return Ct2Translator(ct2_dir, intra_threads=max(1, _cores() // inter), inter_threads=inter, device=device,
                             device_index=local_rank() if device == "cuda" else 0)

    return dataclasses.replace(seqkd, engine="ct2", ct2_quantization=quantization), load_ct2, load_hf


CONVERSION_ERRORS = (ExportError, ImportError, ValueError, NotImplementedError, KeyError)
"""What a teacher that CTranslate2 cannot convert raises in :func:`~distilmt.export.export_ctranslate2`."""


def ct2_obstacle(cfg: RunConfig, teacher_dir: Path) -> str | None:
    """Why the run's teacher cannot make its labels with CTranslate2, or None."""
    if find_spec("ctranslate2") is None:
        return "ctranslate2 is not installed (pip install ctranslate2)"
    if cfg.teacher.kind != "seq2seq":
        return "a causal-LM teacher is decoded with HF generate only"
    if cfg.seqkd.do_sample:
        return "labels are sampled, and CTranslate2's sampling cannot be reseeded per shard"
    forced = None
    for name in ("generation_config.json", "config.json"):
        try:
            saved = json.loads((Path(teacher_dir) / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(saved, dict) and saved.get("forced_bos_token_id") is not None:
            forced = saved["forced_bos_token_id"]
            break
    if forced is not None:  # CTranslate2 starts with the tokenizer's target code (target_prefix): is it that token?
        try:
            tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
        except (OSError, ValueError) as exc:
            return f"{teacher_dir}: its tokenizer does not load ({first_line(exc)})"
        start = setup_of(tokenizer).start_token
        if start is None or tokenizer.convert_tokens_to_ids(start) != forced:
            return (f"{teacher_dir} forces the first target token {forced} (forced_bos_token_id), which is not its "
                    f"tokenizer's target-language code ({start}), so CTranslate2 would not start with it")
    return None


def teacher_ct2(teacher_dir: Path, quantization: str, teacher_id: str) -> Path:
    """The teacher converted to CTranslate2 once, next to it: ``TEACHER_DIR-ct2-QUANTIZATION/`` (e.g.
    ``RUN_DIR/teacher-ct2-int8``), marked complete with the teacher's fingerprint; reused while that matches."""
    out = Path(teacher_dir).parent / f"{Path(teacher_dir).name}-ct2-{quantization}"
    if is_complete(out) and json.loads((out / ".complete").read_text()).get("teacher") == teacher_id:
        return out
    log.info("generate-labels: converting the teacher to CTranslate2 (%s) in %s", quantization, out)
    started = time.time()
    export_ctranslate2(teacher_dir, out, quantization=quantization, force=True)
    mark_complete(out, teacher=teacher_id, quantization=quantization, seconds=round(time.time() - started, 1))
    return out


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _begun_settings(out_dir: Path) -> dict | None:
    """The generation settings of the corpus begun in ``out_dir`` (None when none is; {} when unreadable)."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")).get("settings", {}))
    except (ValueError, AttributeError, TypeError):
        return {}  # build_distilled refuses it with the fix


def dev_subset(cfg: RunConfig, splits):
    n = cfg.data.max_eval_sentences
    return splits.dev[:n] if n else splits.dev


def test_subset(cfg: RunConfig, splits) -> list:
    """The test pairs the final evaluation uses: the first ``data.max_test_sentences`` (0 = all)."""
    n = cfg.data.max_test_sentences
    return list(splits.test[:n] if n else splits.test)
