"""Export a trained model as standard artefacts: a CTranslate2 directory and a plain Hugging Face directory.

Both exports are written to a temporary sibling directory and moved into place at the end, so a failed
export never leaves a half-written ``out_dir``. Each carries ``distilmt_export.json`` (source, parameter
counts, quantization) and the Hugging Face tokenizer, so the CTranslate2 directory is self-contained.

CTranslate2 conversion notes (ctranslate2 4.x ``TransformersConverter``):

* Every CTranslate2 export ends with :func:`check_parity`: per-token log-probabilities of HF and CTranslate2 on
  the HF model's greedy translations of a few sentences, compared at float32 weights (a float32 conversion is made
  for the check when the export is quantized); a difference beyond :data:`PARITY_TOLERANCE` refuses the export.
* MarianMT: the stock loader assumes the opus-mt layout as shipped (``<pad>`` is the last vocabulary entry, the
  decoder starts from it, and its embedding row is zero). It drops the last embedding row and starts the decoder
  from a zero vector. Both are wrong once training has moved the ``<pad>`` row (the output layer is tied to the
  embeddings, so every update moves it), and for models made here (``<pad>`` = 0, decoder start ``</s>``). So every
  Marian is converted exactly as HF computes it: all rows kept, the decoder started from its start token's
  embedding, and the tokenizer's source and target vocabularies (two when they are separate). HF ``generate``'s
  ban on ``<pad>`` (``bad_words_ids``) and forced ``</s>`` at the length cap are recorded under ``decoding`` in
  ``distilmt_export.json`` for :class:`~distilmt.models.translators.Ct2Translator`.
* M2M100: HF numbers positions from ``pad_token_id + 1``; the stock loader hard-codes M2M100's pad id 1
  (skips the first 2 rows of the sinusoidal table). With ``<pad>`` = 0 that shifts every position by one,
  so we slice the table at ``pad_token_id + 1`` instead.
* T5 / mT5 / UMT5: transformers 5 ties the output layer and always sets ``tie_word_embeddings=True``, recording
  whether the decoder output is scaled by ``d_model ** -0.5`` (original T5: yes; T5 v1.1, flan-T5: no) as
  ``scale_decoder_outputs`` (mT5: never scaled, no such field). The stock loader decides from
  ``tie_word_embeddings`` and so scales a v1.1/mT5/flan-T5 model that does not; we scale exactly when the Hugging
  Face model does.
* Other architectures go through the stock converter unchanged.
* The conversion works on a copy of the loaded model: quantizing rewrites the weights it shares memory with.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import torch
import transformers

from .errors import ExportError
from .models.generation import decoder_start, evaluating, max_positions
from .models.loading import EXPORT_INFO, load_seq2seq, require_ctranslate2
from .models.size import count_parameters
from .models.translators import Ct2Translator, HfTranslator
from .models.vocab import source_tokens, vocabulary_tokens

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
    reference = tmp if quantization == "float32" else out_dir.parent / f".{out_dir.name}.float32-check"
    try:
        _convert(model_dir, model, tokenizer, tmp, quantization)
        if reference != tmp:  # the conversion is judged at float32 weights (see check_parity)
            _convert(model_dir, model, tokenizer, reference, "float32")
        parity = check_parity(model, tokenizer, reference, exported=tmp, where=out_dir)
        _write_info(tmp, model_dir, model, format="ctranslate2", quantization=quantization,
                    decoding=_decoding(model, tokenizer, tmp), parity=parity)
        return _move_into_place(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(reference, ignore_errors=True)


def _convert(model_dir: Path, model, tokenizer, directory: Path, quantization: str) -> None:
    """One CTranslate2 conversion into ``directory``, with the tokenizer and the export metadata."""
    _converter(model_dir, model, tokenizer).convert(str(directory), quantization=quantization, force=True)
    tokenizer.save_pretrained(directory)
    _write_info(directory, model_dir, model, format="ctranslate2", quantization=quantization,
                decoding=_decoding(model, tokenizer, directory))


PARITY_SENTENCES = (
    "In the beginning God created the heavens and the earth.",
    "Kezdetben teremtette Isten az eget és a földet.",
    "The quick brown fox jumps over the lazy dog, 1234 times!",
    "Árvíztűrő tükörfúrógép, 5 forint.",
    "Der Himmel ist blau und das Meer ist tief.",
    "Il était une fois une petite maison près de la rivière.",
    "Where are you going tomorrow?",
    "Yes.",
)
"""What the parity check translates: a few short sentences in a few languages (any text gives a target to score)."""

PARITY_TOLERANCE = 0.01
"""Largest difference allowed between the per-token log-probabilities (nats) of the Hugging Face model and its
CTranslate2 conversion at float32 weights; a wrong conversion (vocabulary, decoder start, norms, positions) is off
by far more (up to 8 nats measured on an opus-mt layout whose <pad> row had moved), float32 rounding by about 1e-5."""

QUANTIZED_TOLERANCE = 0.5
"""Largest *mean* difference per token (nats) allowed for the exported model when its weights are quantized: int8
moves single log-probabilities by up to ~0.2 nats and their mean by ~0.02 (tiny models measured here), so this only
catches a quantization that broke the model."""


def parity(model, tokenizer, ct2_dir: Path, sentences=PARITY_SENTENCES, max_new_tokens: int = 24) -> dict:
    """How closely the CTranslate2 model in ``ct2_dir`` computes what the HF ``model`` computes.

    The HF model translates ``sentences`` greedily; both engines then score those translations teacher-forced (HF:
    one forward pass, CTranslate2: ``Translator.score_batch``, each from its own decoder start) and the per-token
    log-probabilities are compared; and CTranslate2 translates the same sentences greedily (as
    :class:`~distilmt.models.translators.Ct2Translator` does) for the count of equal outputs.
    """
    hf, ct2 = HfTranslator(model, tokenizer), Ct2Translator(ct2_dir, inter_threads=1, device="cpu")
    sentences = list(sentences)
    hf_out = hf.translate(sentences, num_beams=1, batch_size=len(sentences), max_new_tokens=max_new_tokens)
    ct2_out = ct2.translate(sentences, num_beams=1, batch_size=len(sentences), max_new_tokens=max_new_tokens)
    limit = max_positions(model, tokenizer)
    sources = tokenizer(sentences, truncation=True, max_length=limit)["input_ids"]
    targets = tokenizer(text_target=hf_out, truncation=True, max_length=limit)["input_ids"]
    batch = tokenizer.pad({"input_ids": sources}, return_tensors="pt")
    width = max(len(t) for t in targets)
    labels = torch.tensor([t + [-100] * (width - len(t)) for t in targets])
    with evaluating(model):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).logits
    hf_logp = torch.log_softmax(logits.float(), -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    eos = tokenizer.eos_token_id
    scored = ct2.translator.score_batch(
        [source_tokens(tokenizer, ids) for ids in sources],
        [tokenizer.convert_ids_to_tokens(t[:-1] if t and t[-1] == eos else t) for t in targets],
        max_input_length=0)
    diffs = [abs(float(hf_logp[i, j]) - result.log_probs[j])
             for i, (target, result) in enumerate(zip(targets, scored)) for j in range(min(len(target),
                                                                                           len(result.log_probs)))]
    return {"sentences": len(sentences), "tokens": len(diffs), "max_abs_logprob_diff": max(diffs, default=0.0),
            "mean_abs_logprob_diff": sum(diffs) / max(1, len(diffs)),
            "greedy_equal": sum(a == b for a, b in zip(hf_out, ct2_out))}


def check_parity(model, tokenizer, reference: Path, exported: Path, where: Path,
                 tolerance: float = PARITY_TOLERANCE, quantized_tolerance: float = QUANTIZED_TOLERANCE) -> dict:
    """The parity check every CTranslate2 export ends with; one ExportError naming ``where`` when it fails.

    The conversion itself is checked at float32 weights (``reference``: the export, or a float32 conversion made
    for the check when the export is quantized), where HF and CTranslate2 must agree to ``tolerance`` nats on every
    token: quantization error would hide a wrong conversion behind a loose tolerance, or fail a right one. A
    quantized export is measured too and only has to stay within ``quantized_tolerance`` nats per token on average
    (int8 changes a few greedy outputs of tiny models; ``greedy_equal`` records how many stayed equal).
    """
    ref = parity(model, tokenizer, reference)
    result = {"tolerance": tolerance, "float32": ref, "passed": ref["max_abs_logprob_diff"] <= tolerance}
    if not result["passed"]:
        raise ExportError(f"{where}: the CTranslate2 conversion does not compute what the Hugging Face model "
                          f"computes (per-token log-probabilities differ by up to {ref['max_abs_logprob_diff']:.3g} "
                          f"nats at float32, tolerance {tolerance}; {ref['greedy_equal']}/{ref['sentences']} greedy "
                          f"outputs equal); nothing was written: this {model.config.model_type} model needs another "
                          "converter (or use `distilmt export --format hf`)")
    if exported != reference:
        result["exported"] = quantized = parity(model, tokenizer, exported)
        result["quantized_tolerance"] = quantized_tolerance
        if quantized["mean_abs_logprob_diff"] > quantized_tolerance:
            raise ExportError(f"{where}: the conversion is right at float32, but the quantized weights move the "
                              f"per-token log-probabilities by {quantized['mean_abs_logprob_diff']:.3g} nats on "
                              f"average (tolerance {quantized_tolerance}); nothing was written: export with "
                              "another --quantization (int8_float32, int16 or float32)")
    return result


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


def _write_info(out: Path, model_dir: Path, model, format: str, quantization: str | None, **extra) -> None:

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
    info.update(extra)
    (out / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def _decoding(model, tokenizer, ct2_dir: Path) -> dict:
    """What HF ``generate`` does with this model that CTranslate2 has to be told at translation time (read by
    :class:`~distilmt.models.translators.Ct2Translator`): the token sequences it never generates
    (``bad_words_ids``: opus-mt bans ``<pad>``, which the conversion keeps as a vocabulary entry; sequences with a
    token the converted vocabulary lacks cannot be generated there anyway) and whether it forces ``</s>`` at the
    length cap (``forced_eos_token_id``: one token fewer than the cap, then ``</s>``)."""
    gen = model.generation_config
    vocabulary = next((json.loads(path.read_text(encoding="utf-8")) for path in
                       (ct2_dir / "target_vocabulary.json", ct2_dir / "shared_vocabulary.json") if path.is_file()), [])
    known = set(vocabulary)
    banned = [tokenizer.convert_ids_to_tokens(list(ids)) for ids in gen.bad_words_ids or []]
    forced = gen.forced_eos_token_id
    forced = list(forced) if isinstance(forced, (list, tuple)) else [forced]
    return {"suppress_sequences": [seq for seq in banned if set(seq) <= known],
            "forced_eos": tokenizer.eos_token_id in forced}


def _converter(model_dir: Path, model, tokenizer):
    """A CTranslate2 converter for this model: the adjusted loaders above for Marian/M2M100/T5, else the stock one."""
    from ctranslate2.converters import Converter, TransformersConverter

    loader = _loader_for(model)
    if loader is None:
        return TransformersConverter(str(model_dir))

    class LoadedModelConverter(Converter):
        def _load(self):
            with torch.no_grad():  # a copy: quantizing the spec rewrites the weights it shares memory with in place
                return loader(copy.deepcopy(model), tokenizer)

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

    class ExactMarianLoader(MarianMTLoader):
        """Marian exactly as the HF model computes it: every embedding row kept (``<pad>`` included), the decoder
        started from its start token's embedding, and the source and target vocabularies of its tokenizer (the same
        list, or two for separate vocabularies)."""

        def __call__(self, model, tokenizer):
            spec = self.get_model_spec(model)
            self.set_config(spec.config, model, tokenizer)
            config = model.config
            spec.register_source_vocabulary(_fit(vocabulary_tokens(tokenizer, "source"), config.vocab_size))
            spec.register_target_vocabulary(_fit(vocabulary_tokens(tokenizer, "target"),
                                                 getattr(config, "decoder_vocab_size", None) or config.vocab_size))
            return spec

        def get_model_spec(self, model):
            model.config.normalize_before = False
            model.config.normalize_embedding = False
            return BartLoader.get_model_spec(self, model)  # no pad-row removal

        def set_config(self, config, model, tokenizer):
            if tokenizer.bos_token is not None:  # opus-mt has none: CTranslate2's default "<s>" stays (unused)
                config.bos_token = tokenizer.bos_token
            config.eos_token = tokenizer.eos_token
            config.unk_token = tokenizer.unk_token
            config.decoder_start_token = tokenizer.convert_ids_to_tokens(decoder_start(model))  # a target-side id

        def set_decoder(self, spec, decoder):
            BartLoader.set_decoder(self, spec, decoder)  # start from the start token's embedding, not from zero

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
        return ExactMarianLoader()
    if config.model_type == "m2m_100":
        return PadAwareM2M100Loader()
    return None


def _fit(tokens: list[str], size: int) -> list[str]:
    """A vocabulary cut or padded (with unused placeholder tokens) to the ``size`` rows of its embedding matrix."""
    return tokens[:size] + [f"<unused{i}>" for i in range(len(tokens), size)]
