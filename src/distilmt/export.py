"""Export a trained model as standard artefacts: a CTranslate2 directory and a plain Hugging Face directory.

Both exports are written to a temporary sibling directory and moved into place at the end, so a failed
export never leaves a half-written ``out_dir``. Each carries ``distilmt_export.json`` (source, parameter
counts, quantization) and the Hugging Face tokenizer, so the CTranslate2 directory is self-contained.

CTranslate2 conversion notes (ctranslate2 4.x ``TransformersConverter``):

* MarianMT: the stock loader assumes the Opus-MT layout (``<pad>`` is the last vocabulary entry and the
  decoder starts from it with a zero embedding). It always drops the last embedding row and starts the
  decoder from a zero vector. Models made here have ``<pad>`` = 0 and start the decoder from ``</s>``, so
  for them we convert without those two changes (otherwise the vocabulary check fails, or the decoder
  starts from the wrong vector). Opus-MT-style models still go through the stock loader.
* M2M100: HF numbers positions from ``pad_token_id + 1``; the stock loader hard-codes M2M100's pad id 1
  (skips the first 2 rows of the sinusoidal table). With ``<pad>`` = 0 that shifts every position by one,
  so we slice the table at ``pad_token_id + 1`` instead.
* T5 / mT5 / UMT5: transformers 5 ties the output layer and always sets ``tie_word_embeddings=True``, recording
  whether the decoder output is scaled by ``d_model ** -0.5`` (original T5: yes; T5 v1.1, flan-T5: no) as
  ``scale_decoder_outputs`` (mT5: never scaled, no such field). The stock loader decides from
  ``tie_word_embeddings`` and so scales a v1.1/mT5/flan-T5 model that does not; we scale exactly when the Hugging
  Face model does.
* Other architectures go through the stock converter unchanged.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import transformers

from .errors import ExportError
from .models.loading import EXPORT_INFO, load_seq2seq, require_ctranslate2
from .models.size import count_parameters

QUANTIZATIONS = ("int8", "int8_float32", "int16", "float32", "float16", "bfloat16", "int8_float16",
                 "int8_bfloat16")


def export_ctranslate2(model_dir: str | Path, out_dir: str | Path, quantization: str = "int8",
                       force: bool = False) -> Path:
    """Convert a HF seq2seq directory to a CTranslate2 directory (weights in ``quantization``) and return it."""
    require_ctranslate2()
    if quantization not in QUANTIZATIONS:
        raise ExportError(f"quantization '{quantization}' is not one of {', '.join(QUANTIZATIONS)}")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    _check_out_dir(model_dir, out_dir, force)
    model, tokenizer = load_seq2seq(model_dir)
    tmp = _fresh_tmp(out_dir)
    try:
        _converter(model_dir, model, tokenizer).convert(str(tmp), quantization=quantization, force=True)
        tokenizer.save_pretrained(tmp)
        _write_info(tmp, model_dir, model, format="ctranslate2", quantization=quantization)
        return _move_into_place(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def export_hf(model_dir: str | Path, out_dir: str | Path, force: bool = False) -> Path:
    """Re-save a model and its tokenizer as a plain HF directory (safetensors, no training state).

    It loads with ``AutoModelForSeq2SeqLM`` / ``AutoTokenizer`` alone; distilmt is not needed.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    _check_out_dir(model_dir, out_dir, force)
    model, tokenizer = load_seq2seq(model_dir)
    tmp = _fresh_tmp(out_dir)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _write_info(tmp, model_dir, model, format="huggingface", quantization=None)
        return _move_into_place(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_out_dir(model_dir: Path, out_dir: Path, force: bool) -> None:
    if out_dir.resolve() == model_dir.resolve():
        raise ExportError(f"{out_dir}: the export directory must differ from the model directory")
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir}: exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise ExportError(f"{out_dir}: directory is not empty; choose another one, or replace it with --force (force=True from Python)")


def _fresh_tmp(out_dir: Path) -> Path:
    tmp = out_dir.parent / f".{out_dir.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    return tmp


def _move_into_place(tmp: Path, out_dir: Path) -> Path:
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def _write_info(out: Path, model_dir: Path, model, format: str, quantization: str | None) -> None:

    counts = count_parameters(model)
    info = {
        "format": format,
        "source": str(model_dir.resolve()),
        "model_type": model.config.model_type,
        "quantization": quantization,
        "params": counts["params"],
        "params_non_embedding": counts["params_non_embedding"],
        "max_positions": getattr(model.config, "max_position_embeddings", None),
        "transformers_version": transformers.__version__,
    }
    if format == "ctranslate2":
        import ctranslate2

        info["ctranslate2_version"] = ctranslate2.__version__
    (out / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def _converter(model_dir: Path, model, tokenizer):
    """A CTranslate2 converter for this model: the adjusted loaders above for Marian/M2M100/T5, else the stock one."""
    from ctranslate2.converters import Converter, TransformersConverter

    loader = _loader_for(model)
    if loader is None:
        return TransformersConverter(str(model_dir))

    class LoadedModelConverter(Converter):
        def _load(self):
            with torch.no_grad():
                return loader(model, tokenizer)

    return LoadedModelConverter()


def _loader_for(model):
    from ctranslate2.converters import transformers as ct2_transformers
    from ctranslate2.converters.transformers import (
        BartLoader,
        M2M100Loader,
        MarianMTLoader,
        MT5Loader,
        T5Loader,
    )

    class PadFirstMarianLoader(MarianMTLoader):
        """Marian with the vocabulary and decoder start exactly as in the HF model."""

        def get_model_spec(self, model):
            model.config.normalize_before = False
            model.config.normalize_embedding = False
            return BartLoader.get_model_spec(self, model)  # no pad-row removal

        def set_config(self, config, model, tokenizer):
            BartLoader.set_config(self, config, model, tokenizer)  # decoder_start_token from the config

        def set_decoder(self, spec, decoder):
            BartLoader.set_decoder(self, spec, decoder)  # start from the start token's embedding

        def get_vocabulary(self, model, tokenizer):
            return BartLoader.get_vocabulary(self, model, tokenizer)

    class PadAwareM2M100Loader(M2M100Loader):
        """M2M100 whose positions start at pad_token_id + 1, whatever the pad id."""

        def set_position_encodings(self, spec, module):
            spec.encodings = module.weights[module.padding_idx + 1:]

    def scaled_as_in_hf(stock):
        class ScaleAsHfT5Loader(stock):
            """T5-family model whose decoder output is scaled exactly when the HF model scales it."""

            def get_model_spec(self, model):
                tied = model.config.tie_word_embeddings  # what the stock loader reads as "scale the outputs"
                model.config.tie_word_embeddings = bool(getattr(model.config, "scale_decoder_outputs", False))
                try:
                    return stock.get_model_spec(self, model)
                finally:
                    model.config.tie_word_embeddings = tied

        return ScaleAsHfT5Loader()

    config = model.config
    t5_loader = {"t5": T5Loader, "mt5": MT5Loader,
                 "umt5": getattr(ct2_transformers, "UMT5Loader", None)}.get(config.model_type)  # UMT5: newer ct2
    if t5_loader is not None:
        return scaled_as_in_hf(t5_loader)
    if config.model_type == "marian":
        if not getattr(config, "share_encoder_decoder_embeddings", True):
            raise ExportError("CTranslate2 export needs a Marian model with one shared vocabulary "
                              "(share_encoder_decoder_embeddings=True)")
        opus_layout = (config.pad_token_id == config.vocab_size - 1
                       and config.decoder_start_token_id == config.pad_token_id)
        return None if opus_layout else PadFirstMarianLoader()
    if config.model_type == "m2m_100":
        return PadAwareM2M100Loader()
    return None
