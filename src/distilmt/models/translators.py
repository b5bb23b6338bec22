"""Translators: a model directory opened behind one interface (``translate``, parameters, size
on disk), for evaluation, the speed table, ``distilmt translate`` and ``compare``.

A Hugging Face seq2seq model (:class:`HfTranslator`), a CTranslate2 export (:class:`Ct2Translator`) and a prompted
causal LM (:class:`CausalTranslator`, prompted as its ``prompt.json`` says) all tokenize with the Hugging Face
tokenizer saved with them and decode with :func:`distilmt.models.generation.decode`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from transformers import AutoTokenizer

from ..config import template_problem
from ..data.languages import setup_of, source_ids
from ..data.prompt import TranslationPrompt
from ..errors import ModelError, ModelLoadError
from ..ranks import local_device
from ..rundir import write_text_atomic
from .generation import ct2_translate_scored, decode, generate_continuations, position_limit, translate
from .loading import (
    first_line,
    is_causal_dir,
    is_ct2_dir,
    load_causal,
    load_seq2seq,
    read_export_info,
    require_ctranslate2,
)
from .size import count_parameters, dir_size_mb
from .vocab import source_tokens, target_ids


@runtime_checkable
class Translator(Protocol):
    """What evaluation needs from an engine: translate, count parameters, weigh the weights."""

    engine: str  # "hf", "ct2" or "hf-causal"
    path: Path | None
    tokenizer: Any

    def translate(self, sentences: Sequence[str], num_beams: int = 4, batch_size: int = 64,
                  max_new_tokens: int = 128) -> list[str]: ...

    def num_parameters(self) -> dict[str, int | None]: ...

    def size_mb(self) -> float | None: ...


class HfTranslator:
    """A Hugging Face seq2seq model as a :class:`Translator`."""

    engine = "hf"

    def __init__(self, model, tokenizer, path: str | Path | None = None):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.path = Path(path) if path is not None else None

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> HfTranslator:
        """The model in ``path`` on ``device`` (default: the GPU when there is one)."""
        model, tokenizer = load_seq2seq(path)
        return cls(model.to(device or local_device()), tokenizer, path)

    @property
    def device(self) -> str:
        return str(self.model.device)

    def translate(self, sentences: Sequence[str], num_beams: int = 4, batch_size: int = 64,
                  max_new_tokens: int = 128) -> list[str]:
        return translate(self.model, self.tokenizer, sentences, num_beams, batch_size, max_new_tokens)

    def num_parameters(self) -> dict[str, int | None]:

        return count_parameters(self.model)

    def size_mb(self) -> float | None:

        return dir_size_mb(self.path) if self.path is not None else None


def ct2_default_device() -> str:
    """Where a CTranslate2 model runs by default: the GPU when CTranslate2 was built with CUDA and sees one."""
    ctranslate2 = require_ctranslate2()
    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def default_inter_threads() -> int:
    """Parallel CT2 batches: one per available core, at most 4 (each runs single-threaded)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


class Ct2Translator:
    """A CTranslate2 model directory (with the HF tokenizer saved in it) as a :class:`Translator`.

    Sources are encoded with the tokenizer's language setup (:mod:`distilmt.data.languages`), and a tokenizer with
    a target-language code (NLLB, M2M100) makes every translation start with it (``target_prefix``), as
    ``forced_bos_token_id`` does for the Hugging Face model.

    ``intra_threads`` is the threads per batch and ``inter_threads`` the batches run in parallel; on a
    small CPU ``intra_threads=1`` with one batch per core gave the best batch throughput here. ``device_index`` is
    the GPU it runs on (under torchrun: the rank's ``LOCAL_RANK``).
    """

    engine = "ct2"

    def __init__(self, model_dir: str | Path, tokenizer_dir: str | Path | None = None, intra_threads: int = 1,
                 inter_threads: int | None = None, compute_type: str = "default", device: str = "auto",
                 device_index: int = 0):
        ctranslate2 = require_ctranslate2()
        self.device = ct2_default_device() if device == "auto" else device  # auto: the GPU when there is one

        self.path = Path(model_dir)
        if not is_ct2_dir(self.path):
            raise ModelLoadError(f"{self.path}: not a CTranslate2 model directory (no model.bin / CT2 config.json)")
        tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir is not None else self.path
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{tokenizer_dir}: no Hugging Face tokenizer found ({first_line(exc)}); "
                                 "pass tokenizer_dir= or export with distilmt.export.export_ctranslate2") from None
        self.info = read_export_info(self.path)
        self.inter_threads = inter_threads or default_inter_threads()
        self.intra_threads = intra_threads
        # CTranslate2 sets the calling thread's OpenMP thread count to intra_threads, and PyTorch shares that
        # runtime: without the restore, everything PyTorch does later in this process (the next seed's training
        # after an export check, students trained after CT2 labels) runs on intra_threads threads (measured: 1)
        torch_threads = torch.get_num_threads()
        self.translator = ctranslate2.Translator(str(self.path), device=self.device, device_index=device_index,
                                                 compute_type=compute_type, inter_threads=self.inter_threads,
                                                 intra_threads=intra_threads)
        torch.set_num_threads(torch_threads)

    def translate(self, sentences: Sequence[str], num_beams: int = 4, batch_size: int = 64,
                  max_new_tokens: int = 128) -> list[str]:
        """Translate all sentences in one call; CTranslate2 sorts them by length into batches of
        ``batch_size`` and runs up to ``inter_threads`` batches in parallel."""
        if not sentences:
            return []
        limit = position_limit(self.info.get("max_positions"), self.tokenizer)
        encoded = source_ids(self.tokenizer, sentences, truncation=True, max_length=limit)
        tokens = [source_tokens(self.tokenizer, ids) for ids in encoded]
        start = setup_of(self.tokenizer).start_token  # NLLB/M2M100: translations start with the target code
        decoding = self.info.get("decoding", {})  # what HF generate does with this model (see distilmt.export)
        cap = min(max_new_tokens, limit)
        cap -= 1 if decoding.get("forced_eos") and cap > 1 else 0  # HF: the last position is the forced </s>
        results = self.translator.translate_batch(
            tokens, max_batch_size=batch_size, beam_size=num_beams,
            max_decoding_length=cap, max_input_length=0, min_decoding_length=0,  # HF may end at once; CT2's default 1
            target_prefix=[[start]] * len(tokens) if start else None,
            suppress_sequences=decoding.get("suppress_sequences") or None,
        )
        return [decode(self.tokenizer, target_ids(self.tokenizer, r.hypotheses[0])) for r in results]

    def translate_scored(self, sources: Sequence[str], cfg, seed: int | None = None) -> list[list[tuple[str, float]]]:
        """Sequence-level KD labels with their teacher scores, from a :class:`~distilmt.config.SeqKDConfig` (beam
        search only; :func:`~distilmt.models.generation.ct2_translate_scored`). ``seed`` is unused: nothing is
        sampled."""
        return ct2_translate_scored(self.translator, self.tokenizer, sources, cfg, self.info.get("max_positions"),
                                    self.info.get("decoding"))

    def num_parameters(self) -> dict[str, int | None]:
        """Parameters of the source model, as recorded at export (None when not recorded)."""
        return {"params": self.info.get("params"), "params_non_embedding": self.info.get("params_non_embedding")}

    def size_mb(self) -> float | None:

        return dir_size_mb(self.path)


def open_model(path: str | Path, **ct2_options) -> Translator:
    """Open a directory as a :class:`Translator`: CTranslate2 when it holds a CT2 model, a prompted causal LM
    (:class:`~distilmt.models.translators.CausalTranslator`, prompt from its ``prompt.json``) when it holds a decoder-only
    model, else a Hugging Face seq2seq model."""

    path = Path(path)
    if not path.is_dir():
        raise ModelLoadError(f"{path}: model directory not found")
    if is_ct2_dir(path):
        return Ct2Translator(path, **ct2_options)
    if is_causal_dir(path):
        try:
            return CausalTranslator.open(path)
        except ModelError as exc:
            raise ModelLoadError(str(exc)) from None
    return HfTranslator.load(path)


PROMPT_FILE = "prompt.json"
"""Written next to every causal model a run holds: ``{"template", "src_lang", "tgt_lang"}``, how it is prompted."""


def save_prompt(model_dir: str | Path, prompt_cfg, data_cfg) -> Path:
    """Write ``model_dir/prompt.json`` (atomically) from the run's ``prompt`` and ``data`` config sections, so
    :func:`distilmt.evaluation.translate.open_model` can translate with that directory alone."""


    return write_text_atomic(Path(model_dir) / PROMPT_FILE, json.dumps(
        {"template": prompt_cfg.template, "src_lang": data_cfg.source_lang, "tgt_lang": data_cfg.target_lang},
        indent=1, ensure_ascii=False) + "\n")


def read_prompt(model_dir: str | Path) -> dict:
    """``{"template", "src_lang", "tgt_lang"}`` of ``model_dir/prompt.json``; a ModelError saying how to write it
    when it is missing or incomplete."""

    path = Path(model_dir) / PROMPT_FILE
    fix = (f'write {path} as {{"template": "auto", "src_lang": "en", "tgt_lang": "hu"}} (your languages; template '
           "as in prompt.template)")
    if not path.is_file():
        raise ModelError(f"{model_dir}: a causal LM translates by continuing a prompt, and it has no {PROMPT_FILE}; "
                         f"{fix}")
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        prompt = {key: str(saved[key]) for key in ("template", "src_lang", "tgt_lang")}
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{path}: not a usable prompt file ({exc.__class__.__name__}: {exc}); {fix}") from None
    problem = template_problem(prompt["template"])
    if problem:
        raise ModelError(f"{path}: template {problem}")
    return prompt


class CausalTranslator:
    """A causal LM with its tokenizer and prompt as a translator: ``translate`` for evaluation (the
    :class:`~distilmt.evaluation.translate.Translator` interface, opened by ``open_model`` from a directory with a
    ``prompt.json``), and ``translate_scored`` for :func:`distilmt.models.generation.translate_scored` (which hands a causal
    teacher over to it), so a causal teacher writes the distilled corpus of a seq2seq student (different tokenizers
    are fine there)."""

    engine = "hf-causal"

    def __init__(self, model, prompt: TranslationPrompt, path: str | Path | None = None):
        self.model, self.prompt = model.eval(), prompt
        self.tokenizer = prompt.tokenizer
        self.path = Path(path) if path is not None else None

    @classmethod
    def load(cls, path: str | Path, template: str = "auto", src_lang: str = "en", tgt_lang: str = "hu",
             device: str | None = None, dtype: str = "") -> "CausalTranslator":
        """The causal LM in ``path`` loaded on ``device`` ("auto": sharded by device_map; None: the CPU) with its
        weights in ``dtype`` (:func:`distilmt.models.loading.placement`)."""
        model, tokenizer = load_causal(path, device=device or "", dtype=dtype)
        return cls(model, TranslationPrompt(tokenizer, template, src_lang, tgt_lang), path)

    @classmethod
    def open(cls, path: str | Path) -> "CausalTranslator":
        """The causal LM in ``path`` prompted as its ``prompt.json`` says (see :func:`save_prompt`), on the GPU when
        there is one."""
        prompt = read_prompt(path)
        return cls.load(path, prompt["template"], prompt["src_lang"], prompt["tgt_lang"], local_device())

    @property
    def device(self) -> str:
        return str(self.model.device)

    def translate(self, sentences: Sequence[str], num_beams: int = 4, batch_size: int = 64,
                  max_new_tokens: int = 128) -> list[str]:
        out = generate_continuations(self.model, self.prompt, sentences, batch_tokens=batch_size * 64,
                                     max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False)
        return [hyps[0][0] for hyps in out]

    def translate_scored(self, sources: Sequence[str], cfg, seed: int | None = None) -> list[list[tuple[str, float]]]:
        """Sequence-level KD labels with their teacher scores, from a :class:`~distilmt.config.SeqKDConfig`."""
        options = dict(num_beams=cfg.num_beams, length_penalty=cfg.length_penalty, do_sample=cfg.do_sample)
        if cfg.do_sample:
            options.update(top_p=cfg.top_p, temperature=cfg.temperature)
        device = self.model.device
        with torch.random.fork_rng(devices=[] if device.type != "cuda" else None, enabled=cfg.do_sample):
            if cfg.do_sample:
                torch.manual_seed(cfg.seed if seed is None else seed)
            return generate_continuations(self.model, self.prompt, sources, cfg.batch_tokens, cfg.max_new_tokens,
                                          cfg.num_return_sequences, score=True, **options)

    def num_parameters(self) -> dict[str, int | None]:

        return count_parameters(self.model)

    def size_mb(self) -> float | None:

        return dir_size_mb(self.path) if self.path is not None else None
