"""A joint source/target subword tokenizer trained here, saved so plain `transformers` loads it."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable
from pathlib import Path

import sentencepiece as spm
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)
from transformers import PreTrainedTokenizerFast

from .languages import LanguageSetup, setup_of

SPECIAL_TOKENS = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>", "bos_token": "<s>"}


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | Path):
    """Train a unigram subword model on both languages (SentencePiece, one thread: the same texts always give the
    same pieces, scores and ids); save it as a HF fast tokenizer (tokenizer.json) that plain transformers loads.

    One vocabulary for both sides lets the encoder and decoder share (tie) embeddings, and lets a
    teacher and a student made here share token ids, which logit-level KD needs. (The tokenizers library's own
    unigram trainer is not deterministic: its scores differ in the third decimal from run to run.)
    """
    model = io.BytesIO()
    specials = {name: i for i, name in enumerate(("pad_token", "eos_token", "unk_token", "bos_token"))}
    spm.SentencePieceTrainer.train(
        sentence_iterator=(line for text in texts for line in text.splitlines() if line.strip()), model_writer=model,
        model_type="unigram", vocab_size=vocab_size, hard_vocab_limit=False, character_coverage=1.0,
        normalization_rule_name="identity", num_threads=1, minloglevel=2,
        pad_id=specials["pad_token"], eos_id=specials["eos_token"], unk_id=specials["unk_token"],
        bos_id=specials["bos_token"], pad_piece=SPECIAL_TOKENS["pad_token"], eos_piece=SPECIAL_TOKENS["eos_token"],
        unk_piece=SPECIAL_TOKENS["unk_token"], bos_piece=SPECIAL_TOKENS["bos_token"])
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    pieces = [(sp.id_to_piece(i), 0.0 if sp.is_control(i) or sp.is_unknown(i) else sp.get_score(i))
              for i in range(sp.get_piece_size())]
    tok = Tokenizer(models.Unigram(pieces, unk_id=specials["unk_token"]))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.add_special_tokens([SPECIAL_TOKENS[name] for name in specials])
    eos_id = specials["eos_token"]
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos_id)]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=512, **SPECIAL_TOKENS)
    fast.save_pretrained(str(out_dir))
    return fast


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of the tokenizer's definition, without its padding/truncation state (which tokenizing with
    ``truncation=True`` or ``pad`` changes on a fast tokenizer: the same tokenizer must keep one fingerprint).

    A fast tokenizer is its tokenizer.json less those two entries; a slow one its vocabulary; both plus the pad
    and eos ids, the length and the language setup (:mod:`distilmt.data.languages`) when it has one. Shared by the
    teacher cache and the sequence-level KD corpus.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        definition = json.loads(backend.to_str())
        definition.pop("truncation", None)
        definition.pop("padding", None)
        text = json.dumps(definition, sort_keys=True, ensure_ascii=False)
    else:
        text = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    specials = json.dumps([tokenizer.pad_token_id, tokenizer.eos_token_id, len(tokenizer)])
    setup = setup_of(tokenizer)  # the language setup changes the ids of sources and labels
    if setup != LanguageSetup():
        specials += json.dumps(setup.to_dict(), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256((text + specials).encode("utf-8")).hexdigest()
