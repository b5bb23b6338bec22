"""Translate sentences with a Hugging Face seq2seq model, a CTranslate2 export or a prompted causal LM
(:class:`distilmt.causal.CausalTranslator`), behind one interface.

The seq2seq engines tokenize with the same Hugging Face tokenizer and decode with the same call
(``decode(ids, skip_special_tokens=True)``), so their outputs are comparable string for string.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from distilmt.models.build import ModelError

EXPORT_INFO = "distilmt_export.json"
"""Metadata written next to an exported model (source parameters, quantization, ...)."""


class ModelLoadError(ModelError):
    """A model directory that cannot be opened; the message names the directory and what to do (the CLI prints
    it as one line)."""


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


def require_ctranslate2():
    """Import ctranslate2, or fail with an install hint."""
    try:
        import ctranslate2
    except ImportError:
        raise ImportError("CTranslate2 is not installed: pip install ctranslate2 "
                          "(or pip install 'distilmt[export]')") from None
    return ctranslate2


def is_ct2_dir(path: str | Path) -> bool:
    """True for a CTranslate2 model directory: model.bin plus a config.json without a HF model_type."""
    path = Path(path)
    if not (path / "model.bin").is_file():
        return False
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return "model_type" not in config


def read_export_info(path: str | Path) -> dict:
    """The export metadata of a directory written by :mod:`distilmt.export` ({} if none)."""
    info = Path(path) / EXPORT_INFO
    return json.loads(info.read_text(encoding="utf-8")) if info.is_file() else {}


def load_seq2seq(path: str | Path):
    """Load ``(model, tokenizer)`` from a Hugging Face seq2seq directory, in eval mode."""
    from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING,
                                                        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING)

    path = Path(path)
    if not path.is_dir():
        raise ModelLoadError(f"{path}: model directory not found")
    if is_ct2_dir(path):
        raise ModelLoadError(f"{path}: this is a CTranslate2 directory; open it with open_model() or Ct2Translator")
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path}: no config.json; expected a directory written by save_pretrained()")
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"{path}: config.json is not a Hugging Face model config ({_first_line(exc)})") from None
    if type(config) in MODEL_FOR_CAUSAL_LM_MAPPING and not config.is_encoder_decoder:
        raise ModelLoadError(f"{path}: '{config.model_type}' is a causal LM, not a seq2seq (encoder-decoder) model; "
                             "`distilmt export` converts seq2seq models only (evaluate, compare and translate open a "
                             "causal LM from its own directory, with its prompt.json)")
    if type(config) not in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING:
        raise ModelLoadError(f"{path}: '{config.model_type}' is not a seq2seq (encoder-decoder) model")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: no usable tokenizer saved with the model ({_first_line(exc)})") from None
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: the model weights could not be loaded ({_first_line(exc)})") from None
    return model.eval(), tokenizer


def translate(model, tokenizer, sentences: Sequence[str], num_beams: int = 4, batch_size: int = 64,
              max_new_tokens: int = 128) -> list[str]:
    """Translate with ``model.generate`` in length-sorted batches; results come back in input order.

    Inputs longer than the model's position table are truncated; ``max_new_tokens`` is capped to it.
    """
    import torch

    if not sentences:
        return []
    limit = _max_positions(getattr(model.config, "max_position_embeddings", None), tokenizer)
    max_new_tokens = min(max_new_tokens, limit)
    encoded = tokenizer(list(sentences), truncation=True, max_length=limit)["input_ids"]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    outputs: list[str] = [""] * len(encoded)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            batch = tokenizer.pad({"input_ids": [encoded[i] for i in chunk]}, return_tensors="pt")
            generated = model.generate(
                input_ids=batch["input_ids"].to(model.device),
                attention_mask=batch["attention_mask"].to(model.device),
                num_beams=num_beams, do_sample=False, max_new_tokens=max_new_tokens,
            )
            for i, ids in zip(chunk, generated.tolist()):
                outputs[i] = decode(tokenizer, ids)
    return outputs


def decode(tokenizer, ids: Sequence[int]) -> str:
    """The one detokenization both engines use."""
    return tokenizer.decode(list(ids), skip_special_tokens=True).strip()


def _max_positions(model_limit: int | None, tokenizer) -> int:
    """Longest sequence both the model's position table and the tokenizer allow (1024 if neither says)."""
    limits = [model_limit, getattr(tokenizer, "model_max_length", None)]
    return min([int(x) for x in limits if isinstance(x, int) and 0 < x < 10**9] or [1024])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class HfTranslator:
    """A Hugging Face seq2seq model as a :class:`Translator`."""

    engine = "hf"

    def __init__(self, model, tokenizer, path: str | Path | None = None):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.path = Path(path) if path is not None else None

    @classmethod
    def load(cls, path: str | Path) -> HfTranslator:
        model, tokenizer = load_seq2seq(path)
        return cls(model, tokenizer, path)

    def translate(self, sentences: Sequence[str], num_beams: int = 4, batch_size: int = 64,
                  max_new_tokens: int = 128) -> list[str]:
        return translate(self.model, self.tokenizer, sentences, num_beams, batch_size, max_new_tokens)

    def num_parameters(self) -> dict[str, int | None]:
        from distilmt.evaluation.size import count_parameters

        return count_parameters(self.model)

    def size_mb(self) -> float | None:
        from distilmt.evaluation.size import dir_size_mb

        return dir_size_mb(self.path) if self.path is not None else None


def default_inter_threads() -> int:
    """Parallel CT2 batches: one per available core, at most 4 (each runs single-threaded)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


class Ct2Translator:
    """A CTranslate2 model directory (with the HF tokenizer saved in it) as a :class:`Translator`.

    ``intra_threads`` is the threads per batch and ``inter_threads`` the batches run in parallel; on a
    small CPU ``intra_threads=1`` with one batch per core gave the best batch throughput here.
    """

    engine = "ct2"

    def __init__(self, model_dir: str | Path, tokenizer_dir: str | Path | None = None, intra_threads: int = 1,
                 inter_threads: int | None = None, compute_type: str = "default", device: str = "cpu"):
        ctranslate2 = require_ctranslate2()
        from transformers import AutoTokenizer

        self.path = Path(model_dir)
        if not is_ct2_dir(self.path):
            raise ModelLoadError(f"{self.path}: not a CTranslate2 model directory (no model.bin / CT2 config.json)")
        tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir is not None else self.path
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{tokenizer_dir}: no Hugging Face tokenizer found ({_first_line(exc)}); "
                                 "pass tokenizer_dir= or export with distilmt.export.export_ctranslate2") from None
        self.info = read_export_info(self.path)
        self.inter_threads = inter_threads or default_inter_threads()
        self.intra_threads = intra_threads
        self.translator = ctranslate2.Translator(str(self.path), device=device, compute_type=compute_type,
                                                 inter_threads=self.inter_threads, intra_threads=intra_threads)

    def translate(self, sentences: Sequence[str], num_beams: int = 4, batch_size: int = 64,
                  max_new_tokens: int = 128) -> list[str]:
        """Translate all sentences in one call; CTranslate2 sorts them by length into batches of
        ``batch_size`` and runs up to ``inter_threads`` batches in parallel."""
        if not sentences:
            return []
        limit = _max_positions(self.info.get("max_positions"), self.tokenizer)
        encoded = self.tokenizer(list(sentences), truncation=True, max_length=limit)["input_ids"]
        tokens = [self.tokenizer.convert_ids_to_tokens(ids) for ids in encoded]
        results = self.translator.translate_batch(
            tokens, max_batch_size=batch_size, beam_size=num_beams,
            max_decoding_length=min(max_new_tokens, limit), max_input_length=0,
        )
        return [decode(self.tokenizer, self.tokenizer.convert_tokens_to_ids(r.hypotheses[0])) for r in results]

    def num_parameters(self) -> dict[str, int | None]:
        """Parameters of the source model, as recorded at export (None when not recorded)."""
        return {"params": self.info.get("params"), "params_non_embedding": self.info.get("params_non_embedding")}

    def size_mb(self) -> float | None:
        from distilmt.evaluation.size import dir_size_mb

        return dir_size_mb(self.path)


def open_model(path: str | Path, **ct2_options) -> Translator:
    """Open a directory as a :class:`Translator`: CTranslate2 when it holds a CT2 model, a prompted causal LM
    (:class:`~distilmt.causal.CausalTranslator`, prompt from its ``prompt.json``) when it holds a decoder-only
    model, else a Hugging Face seq2seq model."""
    from distilmt.causal import CausalTranslator, is_causal_dir

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
