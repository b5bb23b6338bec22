"""One loader per kind of model directory: Hugging Face seq2seq, causal LM, CTranslate2.

Every loader refuses a directory it cannot use with one :class:`~distilmt.errors.ModelLoadError` sentence that
names the directory and what to do.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING,
    MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING,
)

from ..errors import ModelError, ModelLoadError

EXPORT_INFO = "distilmt_export.json"
"""Metadata written next to an exported model (source parameters, quantization, ...)."""


def untied_missing_keys(model, missing_keys) -> list[str]:
    """The keys of ``missing_keys`` (from ``model.load_state_dict(state, strict=False)``) that are really missing:
    a tied weight (``embed_tokens`` / ``lm_head`` sharing ``model.shared``) is saved once, so it is reported
    missing although loading the tensor it shares filled it too (transformers issue #27972)."""
    state = model.state_dict(keep_vars=True)
    missing = set(missing_keys)
    loaded = {state[key].data_ptr() for key in state if key not in missing}
    return [key for key in missing_keys if key not in state or state[key].data_ptr() not in loaded]


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


# -- loading ----------------------------------------------------------------------------------------------
def is_causal_dir(path: str | Path) -> bool:
    """True when ``path`` holds a Hugging Face model that is not an encoder-decoder (read from config.json; a
    CTranslate2 directory's config.json has no model_type and is not one)."""

    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        saved = json.loads(config.read_text(encoding="utf-8"))
    except ValueError:
        return False
    return "model_type" in saved and not saved.get("is_encoder_decoder", False)


def tokenizer_next_to(path: Path):
    """The tokenizer saved in a model directory, or one clear error."""

    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds here
        raise ModelError(f"{path}: no usable tokenizer saved next to the model ({exc.__class__.__name__}); "
                         "save the tokenizer into the same directory") from None


WEIGHT_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def placement(device: str = "", dtype: str = "") -> dict:
    """``from_pretrained`` arguments that place a frozen model: ``device`` "auto" shards it over the visible GPUs
    (then the CPU) with accelerate's ``device_map="auto"``, "cpu" / "cuda:N" loads it there, "" leaves it where
    the caller puts it; ``dtype`` bf16 / fp16 / fp32 loads its weights in that type ("" or "auto": as saved)."""
    options = {"device_map": device} if device else {}
    if dtype in WEIGHT_DTYPES:
        options["dtype"] = WEIGHT_DTYPES[dtype]
    return options


def load_seq2seq(path: str | Path, device: str = "", dtype: str = ""):
    """Load ``(model, tokenizer)`` from a Hugging Face seq2seq directory, in eval mode (placed by ``device`` and
    ``dtype`` as :func:`placement` says)."""

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
        raise ModelLoadError(f"{path}: config.json is not a Hugging Face model config ({first_line(exc)})") from None
    if type(config) in MODEL_FOR_CAUSAL_LM_MAPPING and not config.is_encoder_decoder:
        raise ModelLoadError(f"{path}: '{config.model_type}' is a causal LM, not a seq2seq (encoder-decoder) model; "
                             "for a causal-LM teacher add --set teacher.kind=causal (teacher.kind: causal in a config "
                             "file); `distilmt export` converts seq2seq models only, and evaluate, compare and translate "
                             "open a causal LM from its own directory, with its prompt.json")
    if type(config) not in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING:
        raise ModelLoadError(f"{path}: '{config.model_type}' is not a seq2seq (encoder-decoder) model")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except ImportError as exc:  # e.g. MarianTokenizer (opus-mt) without sentencepiece
        raise ModelLoadError(f"{path}: its tokenizer needs a package that is not installed ({first_line(exc)}); "
                             "install it (pip install sentencepiece sacremoses for opus-mt)") from None
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: no usable tokenizer saved with the model ({first_line(exc)})") from None
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(path, **placement(device, dtype))
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:  # a truncated or damaged weights file
        raise ModelLoadError(f"{path}: the model weights could not be loaded ({first_line(exc)}); copy or save the "
                             "model again (a truncated file?)") from None
    return model.eval(), tokenizer


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def causal_tokenizer(path: str | Path):
    """The tokenizer of a causal LM directory; without a pad token it pads with its eos (the attention mask and -100
    labels hide the padding), without an eos it is refused in one line."""
    tokenizer = tokenizer_next_to(Path(path))
    if tokenizer.eos_token_id is None:
        raise ModelError(f"{path}: its tokenizer has no eos token, so a translation could never end; set "
                         "eos_token in tokenizer_config.json")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal(path: str | Path, role: str = "teacher", device: str = "", dtype: str = ""):
    """``(model, tokenizer)`` of a causal LM saved in a local directory, with a one-line error otherwise (placed
    by ``device`` and ``dtype`` as :func:`placement` says), its tokenizer from :func:`causal_tokenizer`."""

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ModelError(f"{path}: not a Hugging Face model directory (no config.json); set {role}.path to a "
                         "directory saved with save_pretrained")
    config = AutoConfig.from_pretrained(path)
    if getattr(config, "is_encoder_decoder", False):
        raise ModelError(f"{path}: '{config.model_type}' is an encoder-decoder (seq2seq) model; set {role}.kind "
                         "to seq2seq, or point it at a causal LM")
    tokenizer = causal_tokenizer(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **placement(device, dtype))
    except (OSError, RuntimeError, SafetensorError) as exc:  # a truncated or damaged weights file
        raise ModelLoadError(f"{path}: the model weights could not be loaded ({first_line(exc)}); copy or save the "
                             "model again (a truncated file?)") from None
    except ValueError as exc:
        raise ModelError(f"{path}: '{config.model_type}' is not a causal LM transformers can load "
                         f"({str(exc).splitlines()[0]})") from None
    return model, tokenizer
