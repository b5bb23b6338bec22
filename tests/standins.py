"""Tiny stand-ins of the teacher families as the hub ships them, built with the genuine transformers classes and
tokenizers trained on the text given (random weights, optionally trained a few full-batch steps so their outputs
are varied): shared by the tests (tests/models/test_marian.py, test_languages.py, test_causal.py) and
bench/families.py, which puts ``tests/`` on ``sys.path`` to import this module.

* :func:`opus_mt` — bilingual opus-mt (MarianMTModel + MarianTokenizer: source.spm, target.spm, vocab.json, and
  target_vocab.json for separate vocabularies); with ``target_tokens`` a multilingual one (``>>hun<<`` tokens);
* :func:`m2m100` — M2M100 (M2M100Tokenizer: vocab.json + sentencepiece.bpe.model, codes ``__en__`` listed in
  tokenizer_config.json), src_lang / tgt_lang null as shipped;
* :func:`nllb` — NLLB-200 (NllbTokenizer from a SentencePiece BPE model, codes ``eng_Latn``; src_lang / tgt_lang
  null as shipped) with an M2M100ForConditionalGeneration;
* :func:`t5` — T5 v1.1 style (T5Tokenizer from a SentencePiece unigram model, gated-gelu, untied output layer);
* :func:`byte_bpe`, :func:`qwen2`, :func:`qwen2_dir` — a Qwen2-style causal LM with a byte-level BPE tokenizer
  (eos ``<|im_end|>``, pad ``<|endoftext|>``, a ChatML template).

Nothing here needs pytest: a test that wants to skip without sentencepiece/protobuf says so itself.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import sentencepiece as spm
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tokenizers.models import BPE
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    M2M100Config,
    M2M100ForConditionalGeneration,
    MarianConfig,
    MarianMTModel,
    MarianTokenizer,
    NllbTokenizer,
    PreTrainedTokenizerFast,
    Qwen2Config,
    T5Config,
    T5ForConditionalGeneration,
    T5Tokenizer,
)
from transformers.convert_slow_tokenizer import SentencePieceExtractor
from transformers.models.m2m_100.tokenization_m2m_100 import FAIRSEQ_LANGUAGE_CODES

from distilmt.data.batching import ParallelDataset, Seq2SeqCollator
from distilmt.data.prompt import CausalCollator, TranslationPrompt

Pairs = Sequence[tuple[str, str]]


# -- training a few steps -----------------------------------------------------------------------------------------
def train_a_little(model, batch: dict, pad_token_id: int, steps: int, lr: float = 1e-2) -> None:
    """``steps`` AdamW updates on one fixed batch (pad labels ignored), so a tiny model's outputs are varied."""
    batch["labels"][batch["labels"] == pad_token_id] = -100
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def train_pairs(model, tokenizer, pairs: Pairs, steps: int, lr: float = 3e-3) -> None:
    """A few full-batch updates on ``pairs`` encoded as the tokenizer's language setup says."""
    data = ParallelDataset(pairs, tokenizer, max_tokens=48)
    batch = Seq2SeqCollator(tokenizer.pad_token_id, model.config.decoder_start_token_id)(data.examples)
    train_a_little(model, batch, tokenizer.pad_token_id, steps, lr=lr)  # (the collator's labels are -100 at pads)
    model.eval()


# -- SentencePiece ------------------------------------------------------------------------------------------------
def spm_model(lines, out: Path, **options) -> Path:
    """A SentencePiece model trained on ``lines``, written to ``out``."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model, character_coverage=1.0,
                                   minloglevel=2, **options)
    out.write_bytes(model.getvalue())
    return out


def ship(tokenizer, out: Path) -> Path:
    """Save ``tokenizer`` with src_lang/tgt_lang null in tokenizer_config.json, as the hub ships NLLB and M2M100."""
    tokenizer.save_pretrained(out)
    path = out / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config.update(src_lang=None, tgt_lang=None)
    path.write_text(json.dumps(config))
    return out


def _tokenizer_with(tokenizer_dir: Path, src_lang: str, tgt_lang: str):
    """The tokenizer saved in ``tokenizer_dir`` with the language codes set (to teach a stand-in a direction)."""
    taught = AutoTokenizer.from_pretrained(tokenizer_dir)
    taught.src_lang, taught.tgt_lang = src_lang, tgt_lang
    return taught


# -- opus-mt (Marian) ---------------------------------------------------------------------------------------------
def _marian_spm(texts, size: int, path: Path) -> list[str]:
    """A unigram SentencePiece model as opus-mt ships them (<unk>, </s>; no <s>); its pieces in order."""
    spm_model(texts, path, vocab_size=size, model_type="unigram", unk_id=0, eos_id=1, bos_id=-1,
              hard_vocab_limit=False)
    sp = spm.SentencePieceProcessor(model_file=str(path))
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if not (sp.is_control(i) or sp.is_unknown(i))]


def opus_mt(out: Path, pairs: Pairs, separate: bool = False, src_size: int = 500, tgt_size: int = 500,
            layers: int = 2, train_steps: int = 0, seed: int = 0, target_tokens: Sequence[str] = (),
            train_token: str = "") -> Path:
    """An opus-mt stand-in in ``out``: </s> = 0, <unk> = 1, <pad> the last id of the (target) vocabulary and the
    decoder start, tied output layer, opus-mt's generation config (bans <pad>, forces </s> at the length cap).

    ``separate``: a vocabulary per side (``target_vocab.json``, ``share_encoder_decoder_embeddings=False``) with the
    target one smaller; <pad> keeps one id on both sides. ``target_tokens`` (e.g. ``>>deu<<``, ``>>hun<<``): a
    multilingual opus-mt, whose source vocabulary holds one token per target language (shared vocabulary only).
    ``train_steps`` of AdamW on ``pairs`` (the tied output layer moves the <pad> row away from zero, as any fine-tuning
    does), each source preceded by ``train_token`` when given (what a multilingual opus-mt was trained on)."""
    assert not (separate and target_tokens), "a multilingual opus-mt stand-in has one shared vocabulary"
    out.mkdir(parents=True, exist_ok=True)
    src_pieces = _marian_spm([s for s, _ in pairs], src_size, out / "source.spm")
    tgt_pieces = _marian_spm([t for _, t in pairs], tgt_size, out / "target.spm")
    files = dict(source_spm=str(out / "source.spm"), target_spm=str(out / "target.spm"), vocab=str(out / "vocab.json"))
    if separate:
        target = {"</s>": 0, "<unk>": 1}
        for piece in tgt_pieces:
            target.setdefault(piece, len(target))
        pad = target["<pad>"] = len(target)
        source = {"</s>": 0, "<unk>": 1}
        for piece in src_pieces:
            if len(source) == pad:
                source["<pad>"] = pad
            source.setdefault(piece, len(source))
        assert source.get("<pad>") == pad and len(source) > len(target)
        (out / "target_vocab.json").write_text(json.dumps(target, ensure_ascii=False), encoding="utf-8")
        files.update(target_vocab_file=str(out / "target_vocab.json"), separate_vocabs=True)
        sizes = dict(vocab_size=len(source), decoder_vocab_size=len(target), share_encoder_decoder_embeddings=False)
    else:
        source = {"</s>": 0, "<unk>": 1}
        for piece in [*src_pieces, *tgt_pieces, *target_tokens]:
            source.setdefault(piece, len(source))
        source["<pad>"] = len(source)
        sizes = dict(vocab_size=len(source))
    (out / "vocab.json").write_text(json.dumps(source, ensure_ascii=False), encoding="utf-8")
    tokenizer = MarianTokenizer(**files)
    torch.manual_seed(seed)
    model = MarianMTModel(MarianConfig(
        **sizes, d_model=32, encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128, dropout=0.0,
        activation_function="swish", scale_embedding=True, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id,
        forced_eos_token_id=tokenizer.eos_token_id, bos_token_id=None))
    gen = model.generation_config
    gen.bad_words_ids, gen.num_beams, gen.max_length = [[tokenizer.pad_token_id]], 4, 512
    if train_steps:
        prefix = f"{train_token} " if train_token else ""
        batch = tokenizer([prefix + s for s, _ in pairs[:64]], text_target=[t for _, t in pairs[:64]],
                          return_tensors="pt", padding=True, truncation=True, max_length=48)
        train_a_little(model, batch, tokenizer.pad_token_id, train_steps)
    model.eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


# -- M2M100 and NLLB-200 ------------------------------------------------------------------------------------------
def m2m100_tokenizer(lines, out: Path, vocab_size: int = 300):
    """An M2M100 tokenizer as facebook/m2m100_* ship it, in ``out``: sentencepiece.bpe.model trained on ``lines``,
    vocab.json (<s>, <pad>, </s>, <unk>, the pieces), and tokenizer_config.json / special_tokens_map.json listing the
    100 language codes as additional special tokens, src_lang/tgt_lang null; loaded back with AutoTokenizer (an
    M2M100Tokenizer: the codes __en__ ... get the ids after vocab.json)."""
    out.mkdir(parents=True, exist_ok=True)
    spm_file = spm_model(lines, out / "sentencepiece.bpe.model", vocab_size=vocab_size, model_type="unigram")
    processor = spm.SentencePieceProcessor(model_file=str(spm_file))
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(["<s>", "<pad>", "</s>", "<unk>", *pieces]))}
    (out / "vocab.json").write_text(json.dumps(vocab))
    codes = [f"__{code}__" for code in FAIRSEQ_LANGUAGE_CODES["m2m100"]]
    special = {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
    (out / "special_tokens_map.json").write_text(json.dumps({**special, "additional_special_tokens": codes}))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "src_lang": None, "tgt_lang": None, **special, "language_codes": "m2m100", "num_madeup_words": 8,
        "additional_special_tokens": codes, "model_max_length": 1024, "tokenizer_class": "M2M100Tokenizer"}))
    return AutoTokenizer.from_pretrained(out)


def _m2m100_model(vocab_size: int, seed: int = 0) -> M2M100ForConditionalGeneration:
    """A tiny M2M100ForConditionalGeneration (d_model 32, 2+2 layers) with fairseq's special ids."""
    torch.manual_seed(seed)
    return M2M100ForConditionalGeneration(M2M100Config(
        vocab_size=vocab_size, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128, dropout=0.0,
        encoder_layerdrop=0.0, decoder_layerdrop=0.0, scale_embedding=True, pad_token_id=1, bos_token_id=0,
        eos_token_id=2, decoder_start_token_id=2, tie_word_embeddings=True))


def m2m100(root: Path, pairs: Pairs, train_steps: int = 0, src_lang: str = "en", tgt_lang: str = "hu",
           vocab_size: int = 300) -> Path:
    """An M2M100 stand-in in ``root / "model"`` (:func:`m2m100_tokenizer`, a tiny M2M100ForConditionalGeneration with
    a row for every id: vocab.json, the codes, the 8 "madeup words"), taught ``train_steps`` full-batch updates of
    ``src_lang`` -> ``tgt_lang`` on ``pairs`` (labels start with ``__hu__``, as M2M100 was trained)."""
    out = root / "model"
    tokenizer = m2m100_tokenizer([text for pair in pairs for text in pair], out, vocab_size)
    model = _m2m100_model(tokenizer.encoder_size + len(tokenizer.lang_token_to_id) + tokenizer.num_madeup_words)
    if train_steps:
        train_pairs(model, _tokenizer_with(out, src_lang, tgt_lang), pairs[:64], steps=train_steps, lr=1e-2)
    model.eval().save_pretrained(out)
    return out


def nllb(root: Path, pairs: Pairs, train_steps: int = 60, src_lang: str = "eng_Latn", tgt_lang: str = "hun_Latn",
         vocab_size: int = 500) -> Path:
    """An NLLB stand-in in ``root / "model"``: an NllbTokenizer from a SentencePiece BPE model trained on ``pairs``
    (it adds the FAIRSEQ language codes) and a tiny M2M100ForConditionalGeneration of its vocabulary size, taught a
    little ``src_lang`` -> ``tgt_lang`` (labels start with ``hun_Latn``, as NLLB was trained), saved as shipped."""
    root.mkdir(parents=True, exist_ok=True)
    lines = [text for pair in pairs for text in pair]
    spm_file = spm_model(lines, root / "sentencepiece.bpe.model", vocab_size=vocab_size, model_type="bpe", bos_id=0,
                         pad_id=1, eos_id=2, unk_id=3)
    extracted = SentencePieceExtractor(str(spm_file)).extract(BPE)
    tokenizer = NllbTokenizer(vocab=extracted["vocab"], merges=extracted["merges"])  # + the FAIRSEQ codes
    model = _m2m100_model(len(tokenizer))
    if train_steps:
        taught = _tokenizer_with(ship(tokenizer, root / "shipped-tokenizer"), src_lang, tgt_lang)
        train_pairs(model, taught, pairs[:64], steps=train_steps, lr=1e-2)
    out = root / "model"
    model.save_pretrained(out)
    return ship(tokenizer, out)


# -- T5 v1.1 ------------------------------------------------------------------------------------------------------
def t5(root: Path, pairs: Pairs, prefix: str, train_steps: int = 0, vocab_size: int = 400) -> Path:
    """A T5 v1.1-style stand-in in ``root / "model"`` (gated-gelu, untied, unscaled outputs) with a SentencePiece
    T5Tokenizer trained on ``pairs`` and the task ``prefix``; ``train_steps`` full-batch updates with the prefix."""
    root.mkdir(parents=True, exist_ok=True)
    lines = [text for pair in pairs for text in pair] + [prefix.strip()] * 20
    spm_model(lines, root / "spiece.model", vocab_size=vocab_size, model_type="unigram", pad_id=0, eos_id=1,
              unk_id=2, bos_id=-1)
    tokenizer = T5Tokenizer.from_pretrained(str(root), extra_ids=0)
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=1, num_heads=4,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0))
    if train_steps:
        train_pairs(model, tokenizer, [(prefix + s, t) for s, t in pairs[:64]], steps=train_steps)
    out = root / "model"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


# -- Qwen2-style causal LM ----------------------------------------------------------------------------------------
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def byte_bpe(texts, vocab_size: int, chat: bool) -> PreTrainedTokenizerFast:
    """A Qwen-like byte-level BPE tokenizer trained on ``texts`` (eos <|im_end|>, pad <|endoftext|>)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    if chat:
        fast.chat_template = CHATML
    return fast


def qwen2(tokenizer, seed: int, pad_to: int = 64, layers: int = 2):
    """A tiny Qwen2 causal LM whose embedding matrix is padded to a multiple of ``pad_to`` rows."""
    config = Qwen2Config(vocab_size=-(-len(tokenizer) // pad_to) * pad_to, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=True, bos_token_id=None,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def save(model, tokenizer, out: Path) -> Path:
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def qwen2_dir(out: Path, pairs: Pairs, vocab_size: int = 400, layers: int = 2, seed: int = 0, train_steps: int = 0,
              tokenizer=None, src_lang: str = "en", tgt_lang: str = "hu") -> Path:
    """A Qwen2-style chat model saved in ``out``: a byte-level BPE tokenizer trained on ``pairs`` (or ``tokenizer``,
    e.g. the teacher's, for a student of the same family), taught ``train_steps`` full-batch updates of the
    ``src_lang`` -> ``tgt_lang`` prompt (distilmt's ``auto`` prompt: the chat template) on ``pairs``."""
    tokenizer = tokenizer or byte_bpe([text for pair in pairs for text in pair], vocab_size, chat=True)
    model = qwen2(tokenizer, seed=seed, layers=layers)
    if train_steps:
        prompt = TranslationPrompt(tokenizer, "auto", src_lang, tgt_lang)
        batch = CausalCollator(tokenizer.pad_token_id)([prompt.example(s, t) for s, t in pairs[:64]])
        train_a_little(model, batch, tokenizer.pad_token_id, train_steps, lr=3e-3)
    return save(model.eval(), tokenizer, out)
