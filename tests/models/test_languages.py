"""Multilingual teachers as shipped: NLLB-200/M2M100 language codes, T5 task prefixes, opus-mt target tokens.

The stand-ins (tests/standins.py) are built with the genuine classes: an ``NllbTokenizer`` from a SentencePiece BPE
model trained on real verses (it adds the FAIRSEQ language codes; src_lang/tgt_lang saved as null, as the hub ships
them) with a tiny ``M2M100ForConditionalGeneration`` of the NLLB vocabulary size, a ``T5Tokenizer`` from a SentencePiece
unigram model with a tiny T5 v1.1-style ``T5ForConditionalGeneration`` (gated-gelu, tie_word_embeddings=False), an
``M2M100Tokenizer`` (vocab.json + sentencepiece.bpe.model) and a multilingual opus-mt ``MarianTokenizer``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, MarianTokenizer

from distilmt.cli import main
from distilmt.config import DataConfig, SeqKDConfig, StudentConfig, load_config
from distilmt.data.batching import ParallelDataset
from distilmt.data.languages import resolve, setup_of, source_ids
from distilmt.data.readers import write_tsv
from distilmt.errors import ConfigError
from distilmt.export import export_ctranslate2
from distilmt.models.build import derive_student
from distilmt.models.generation import translate, translate_scored
from distilmt.models.loading import load_seq2seq
from distilmt.models.translators import Ct2Translator, HfTranslator
from distilmt.recipes.stages import ct2_obstacle, labels_engine
from distilmt.rundir import teacher_fingerprint
from helpers import needs_ct2, write_config
from standins import m2m100_tokenizer, nllb, opus_mt, t5, train_pairs

EN_HU = DataConfig(corpus="verses.tsv", source_lang="en", target_lang="hu")
PREFIX = "translate English to Hungarian: "


@pytest.fixture(scope="module")
def nllb_dir(tmp_path_factory, verse_pairs) -> Path:
    """An NLLB stand-in taught a little en->hu (labels start with hun_Latn, as NLLB was trained), saved as shipped."""
    return nllb(tmp_path_factory.mktemp("nllb"), verse_pairs[:300], train_steps=60)


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory, verse_pairs) -> Path:
    """A T5 v1.1-style stand-in (gated-gelu, untied, unscaled outputs) with a SentencePiece T5Tokenizer."""
    return t5(tmp_path_factory.mktemp("t5"), verse_pairs[:300], PREFIX)


def _set_up(model_dir: Path, data: DataConfig, out: Path):
    """What `distilmt run` does with a teacher directory: resolve its languages, apply, save; reloaded."""
    model, tokenizer = load_seq2seq(model_dir)
    setup = resolve(data, tokenizer)
    setup.apply(tokenizer)
    setup.configure_generation(model, tokenizer)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return load_seq2seq(out)


def test_nllb_labels_start_with_the_target_code(nllb_dir, verse_pairs, tmp_path):
    shipped = AutoTokenizer.from_pretrained(nllb_dir)
    assert (shipped.src_lang, shipped.tgt_lang) == ("eng_Latn", None)
    hun, eng = shipped.convert_tokens_to_ids(["hun_Latn", "eng_Latn"])
    pairs = verse_pairs[:5]
    # the failure: a shipped tokenizer tags Hungarian labels as English
    assert ParallelDataset(pairs, shipped).examples[0]["labels"][0] == eng

    _, tokenizer = _set_up(nllb_dir, EN_HU, tmp_path / "en-hu")
    assert (tokenizer.src_lang, tokenizer.tgt_lang) == ("eng_Latn", "hun_Latn")
    assert setup_of(tokenizer).start_token == "hun_Latn"
    for example in ParallelDataset(pairs, tokenizer).examples:
        assert example["input_ids"][0] == eng and example["labels"][0] == hun
        assert example["labels"][-1] == tokenizer.eos_token_id

    hu_en = DataConfig(corpus="verses.tsv", source_lang="hu", target_lang="en")
    _, reverse = _set_up(nllb_dir, hu_en, tmp_path / "hu-en")
    example = ParallelDataset([(t, s) for s, t in pairs], reverse).examples[0]
    assert (example["input_ids"][0], example["labels"][0]) == (hun, eng)
    # explicit codes win over the table
    explicit = DataConfig(corpus="verses.tsv", source_lang="en", target_lang="hu", target_lang_code="deu_Latn")
    assert resolve(explicit, shipped).tgt_lang == "deu_Latn"


def test_wrong_language_settings_are_one_config_error(nllb_dir, t5_dir):
    nllb, t5 = AutoTokenizer.from_pretrained(nllb_dir), AutoTokenizer.from_pretrained(t5_dir)
    cases = [
        (nllb, {"target_lang_code": "xyz_Latn"}, "data.target_lang_code", "hun_Latn"),
        (nllb, {"source_lang": "en", "target_lang": "tlh"}, "data.target_lang_code", "set data."),
        (nllb, {"target_token": ">>hun<<"}, "data.target_token", "leave data.target_token empty"),
        (t5, {"source_lang_code": "eng_Latn"}, "data.source_lang_code", "no language codes"),
    ]
    for tokenizer, fields, key, fix in cases:
        with pytest.raises(ConfigError) as caught:
            resolve(DataConfig(**{"corpus": "c.tsv", **fields}), tokenizer)
        message = str(caught.value)
        assert message.startswith(key) and fix in message and "\n" not in message, message
    with pytest.raises(ConfigError, match="data.target_lang_code"):
        DataConfig(target_lang_code="hun Latn")
    assert resolve(DataConfig(corpus="c.tsv", source_prefix=PREFIX), t5).source_prefix == PREFIX


def test_m2m100_codes_and_opus_mt_target_token(verse_pairs, tmp_path):
    lines = [text for pair in verse_pairs[:200] for text in pair]
    m2m = m2m100_tokenizer(lines, tmp_path / "spm")  # tgt_lang None, as shipped
    setup = resolve(EN_HU, m2m)
    assert (setup.src_lang, setup.tgt_lang, setup.start_token) == ("en", "hu", "__hu__")
    given = DataConfig(corpus="c.tsv", source_lang="en", target_lang="hu", target_lang_code="__hu__")
    assert resolve(given, m2m).tgt_lang == "hu"
    setup.apply(m2m).save_pretrained(tmp_path / "m2m")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "m2m")
    assert setup_of(reloaded) == setup
    example = ParallelDataset(verse_pairs[:1], reloaded).examples[0]
    assert example["input_ids"][0] == reloaded.get_lang_id("en") and example["labels"][0] == reloaded.get_lang_id("hu")

    opus = opus_mt(tmp_path / "opus-mt-en-mul", verse_pairs[:200], target_tokens=(">>deu<<", ">>hun<<"))
    marian = MarianTokenizer.from_pretrained(opus)  # a multilingual opus-mt: one token per target language
    marian_vocab = marian.get_vocab()
    with pytest.raises(ConfigError, match=r"^data.target_token: '>>xyz<<' .* e.g. >>deu<<, >>hun<<$"):
        resolve(DataConfig(corpus="c.tsv", target_token=">>xyz<<"), marian)
    resolve(DataConfig(corpus="c.tsv", target_token=">>hun<<"), marian).apply(marian).save_pretrained(tmp_path / "mt")
    marian = AutoTokenizer.from_pretrained(tmp_path / "mt")
    source, target = verse_pairs[0]
    example = ParallelDataset([(source, target)], marian).examples[0]
    assert example["input_ids"][0] == marian_vocab[">>hun<<"]
    assert example["input_ids"] == marian(">>hun<< " + source)["input_ids"]
    assert marian_vocab[">>hun<<"] not in example["labels"]


def test_generation_starts_with_the_forced_target_code(nllb_dir, verse_pairs, tmp_path):
    model, tokenizer = _set_up(nllb_dir, EN_HU, tmp_path / "teacher")
    hun = tokenizer.convert_tokens_to_ids("hun_Latn")
    assert model.generation_config.forced_bos_token_id == hun  # saved with the model, read by every generate()
    sources = [s for s, _ in verse_pairs[:6]]
    batch = tokenizer.pad({"input_ids": source_ids(tokenizer, sources)}, return_tensors="pt")
    generated = model.generate(**batch, num_beams=1, max_new_tokens=8)
    assert generated[:, 0].tolist() == [model.config.decoder_start_token_id] * 6
    assert generated[:, 1].tolist() == [hun] * 6
    texts = translate(model, tokenizer, sources, num_beams=1, max_new_tokens=8)
    assert all("hun_Latn" not in t for t in texts)
    scored = translate_scored(model, tokenizer, sources[:2], SeqKDConfig(num_beams=1, max_new_tokens=8))
    assert [hyps[0][0] for hyps in scored] == texts[:2] and all(hyps[0][1] <= 0 for hyps in scored)
    student = derive_student(model, StudentConfig(depth_ratio=1.0))
    assert student.generation_config.forced_bos_token_id == hun


@needs_ct2
def test_nllb_ctranslate2_equals_hf_greedy(nllb_dir, verse_pairs, tmp_path):
    model, tokenizer = _set_up(nllb_dir, EN_HU, tmp_path / "teacher")
    ct2 = Ct2Translator(export_ctranslate2(tmp_path / "teacher", tmp_path / "ct2", quantization="float32"))
    assert setup_of(ct2.tokenizer).start_token == "hun_Latn"  # the tokenizer saved in the export carries it
    sources = [s for s, _ in verse_pairs[200:216]]
    hf_out = HfTranslator(model, tokenizer).translate(sources, num_beams=1, max_new_tokens=24)
    assert ct2.translate(sources, num_beams=1, max_new_tokens=24) == hf_out
    assert len(set(hf_out)) > 1, hf_out
    # a code the stand-in was never taught to start with: only the forced start (HF) / target_prefix (CT2) gives it
    en_de = DataConfig(corpus="verses.tsv", source_lang="en", target_lang="de", target_lang_code="deu_Latn")
    model, tokenizer = _set_up(nllb_dir, en_de, tmp_path / "en-de")
    ct2 = Ct2Translator(export_ctranslate2(tmp_path / "en-de", tmp_path / "ct2-de", quantization="float32"))
    de_out = HfTranslator(model, tokenizer).translate(sources, num_beams=1, max_new_tokens=24)
    assert ct2.translate(sources, num_beams=1, max_new_tokens=24) == de_out != hf_out


@needs_ct2
def test_nllb_labels_through_ctranslate2_are_the_hf_labels(nllb_dir, verse_pairs, tmp_path):
    """seqkd.engine=auto picks CTranslate2 for a teacher that forces its target code (NLLB): the code goes in as
    target_prefix, and the float32 labels and scores are HF generate's."""
    run = tmp_path / "run"
    model, tokenizer = _set_up(nllb_dir, EN_HU, run / "teacher")
    assert model.generation_config.forced_bos_token_id == tokenizer.convert_tokens_to_ids("hun_Latn")
    cfg = load_config(overrides=["seqkd.num_beams=4", "seqkd.max_new_tokens=24", "seqkd.ct2_quantization=float32"])
    assert ct2_obstacle(cfg, run / "teacher") is None
    seqkd, load, _ = labels_engine(cfg, run / "teacher", teacher_fingerprint(run / "teacher"), run / "distilled")
    assert seqkd.engine == "ct2"
    sources = [s for s, _ in verse_pairs[200:216]]
    ct2_labels, hf_labels = load().translate_scored(sources, seqkd), translate_scored(model, tokenizer, sources, seqkd)
    assert [[text for text, _ in row] for row in ct2_labels] == [[text for text, _ in row] for row in hf_labels]
    assert len({row[0][0] for row in hf_labels}) > 1
    for ct2_row, hf_row in zip(ct2_labels, hf_labels):
        assert ct2_row[0][1] == pytest.approx(hf_row[0][1], abs=1e-3)


def test_t5_prefix_reaches_the_encoder(t5_dir, verse_pairs, tmp_path):
    model, tokenizer = _set_up(t5_dir, DataConfig(corpus="c.tsv", source_prefix=PREFIX), tmp_path / "t5")
    assert setup_of(tokenizer).source_prefix == PREFIX  # saved in tokenizer_config.json and read back
    source, target = verse_pairs[0]
    example = ParallelDataset([(source, target)], tokenizer).examples[0]
    assert example["input_ids"] == tokenizer(PREFIX + source)["input_ids"]
    assert example["labels"] == tokenizer(text_target=target)["input_ids"]  # targets carry no prefix
    seen = []
    generate = model.generate

    def spy(**kwargs):
        seen.extend(kwargs["input_ids"].tolist())
        return generate(**kwargs)

    model.generate = spy
    translate(model, tokenizer, [source], num_beams=1, max_new_tokens=4)
    assert tokenizer.decode(seen[0], skip_special_tokens=True).startswith(PREFIX.strip())


@needs_ct2
def test_t5_ctranslate2_equals_hf_after_training(t5_dir, verse_pairs, tmp_path):
    model, tokenizer = _set_up(t5_dir, DataConfig(corpus="c.tsv", source_prefix=PREFIX), tmp_path / "t5")
    assert model.config.scale_decoder_outputs is False  # v1.1 style: the case the stock converter got wrong
    train_pairs(model, tokenizer, verse_pairs[:64], steps=40)
    model.save_pretrained(tmp_path / "t5")
    ct2 = Ct2Translator(export_ctranslate2(tmp_path / "t5", tmp_path / "ct2", quantization="float32"))
    source, target = verse_pairs[300]
    src_tokens = tokenizer.convert_ids_to_tokens(source_ids(tokenizer, [source])[0])
    tgt_ids = tokenizer(text_target=target)["input_ids"]
    ct2_logp = ct2.translator.score_batch([src_tokens], [tokenizer.convert_ids_to_tokens(tgt_ids[:-1])])[0].log_probs
    with torch.no_grad():
        logits = model(**tokenizer([PREFIX + source], return_tensors="pt"), labels=torch.tensor([tgt_ids])).logits
    hf_logp = torch.log_softmax(logits[0], -1).gather(-1, torch.tensor(tgt_ids)[:, None]).squeeze(-1)
    assert len(ct2_logp) == len(tgt_ids)
    assert max(abs(a - b) for a, b in zip(hf_logp.tolist(), ct2_logp)) < 1e-3
    sources = [s for s, _ in verse_pairs[200:216]]
    hf_out = HfTranslator(model, tokenizer).translate(sources, num_beams=1, max_new_tokens=24)
    assert ct2.translate(sources, num_beams=1, max_new_tokens=24) == hf_out
    assert len(set(hf_out)) > 1, hf_out


def test_run_end_to_end_on_the_nllb_stand_in(nllb_dir, verse_pairs, tmp_path):
    corpus = tmp_path / "verses.tsv"
    write_tsv(verse_pairs[:460], corpus)
    config = write_config(tmp_path, data__dev_size=30, data__test_size=12, data__max_tokens=64,
                          eval__speed_sentences=0, eval__semantic=False)
    run_dir = tmp_path / "run"
    assert main(["run", "--config", str(config), "--teacher", str(nllb_dir), "--corpus", str(corpus),
                 "--direction", "en-hu", "--run-dir", str(run_dir)]) == 0
    rows = {r["name"] for r in json.loads((run_dir / "metrics.json").read_text())["models"]}
    assert {"teacher", "student-baseline", "student-kd"} <= rows
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "tokenizer")
    hun = tokenizer.convert_tokens_to_ids("hun_Latn")
    assert (tokenizer.src_lang, tokenizer.tgt_lang) == ("eng_Latn", "hun_Latn")
    for name in ("teacher", "student-baseline", "student-kd"):
        saved = json.loads((run_dir / name / "generation_config.json").read_text())
        assert saved["forced_bos_token_id"] == hun, name
        assert json.loads((run_dir / name / "tokenizer_config.json").read_text())["tgt_lang"] == "hun_Latn"
