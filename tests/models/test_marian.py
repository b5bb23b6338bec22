"""An opus-mt teacher as Helsinki-NLP ships one (MarianMTModel + MarianTokenizer: source.spm, target.spm, vocab.json,
and target_vocab.json for separate vocabularies), built from genuine classes on real verses (tests/standins.py): its
vocabulary sides, the students derived from it, its CTranslate2 export (equal to HF after training moved the <pad>
row) and the whole `distilmt run --teacher DIR` in both directions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import MarianConfig, MarianMTModel, MarianTokenizer

from distilmt.cli import main
from distilmt.config import StudentConfig
from distilmt.data.readers import write_tsv
from distilmt.errors import ExportError, ModelError
from distilmt.models.build import derive_student
from distilmt.models.loading import EXPORT_INFO, load_seq2seq
from distilmt.models.translators import Ct2Translator, HfTranslator
from distilmt.models.vocab import check_same_vocabulary, check_shared_vocabulary, target_vocab_size
from distilmt.teachers.signal import LiveTeacher
from helpers import HAS_CT2, needs_ct2, write_config
from standins import opus_mt


def _pairs(verse_pairs, direction: str):
    return [(e, h) for e, h in verse_pairs] if direction == "en-hu" else [(h, e) for e, h in verse_pairs]


@pytest.fixture(scope="module")
def separate_huen(tmp_path_factory, verse_pairs) -> Path:
    return opus_mt(tmp_path_factory.mktemp("opus-sep") / "opus-mt-hu-en", _pairs(verse_pairs[:400], "hu-en"),
                   separate=True, src_size=500, tgt_size=300)


def _pad_row_norm(model) -> float:
    return float(model.get_decoder().embed_tokens.weight[model.config.pad_token_id].detach().norm())


def test_separate_vocabularies_are_checked_on_their_own_sides(separate_huen):
    model, tokenizer = load_seq2seq(separate_huen)
    assert type(tokenizer).__name__ == "MarianTokenizer" and tokenizer.separate_vocabs
    rows = model.get_output_embeddings().weight.shape[0]
    assert rows == model.config.decoder_vocab_size == target_vocab_size(tokenizer) < len(tokenizer)
    check_same_vocabulary(tokenizer, tokenizer, model, model)  # the output layer covers the *target* vocabulary
    assert check_shared_vocabulary(tokenizer, tokenizer, model, model) == rows
    # A model whose output layer is smaller than that target vocabulary is still refused.
    small = MarianMTModel(MarianConfig(**{**model.config.to_dict(), "decoder_vocab_size": rows - 10,
                                          "pad_token_id": rows - 11, "decoder_start_token_id": rows - 11}))
    with pytest.raises(ModelError, match=f"{rows - 10:,} rows, fewer than the {rows:,}-token target vocabulary"):
        check_same_vocabulary(tokenizer, tokenizer, small, where="teacher")


def test_student_of_a_separate_vocabulary_teacher_keeps_the_target_size(separate_huen):
    teacher, tokenizer = load_seq2seq(separate_huen)
    student = derive_student(teacher, StudentConfig(depth_ratio=0.5, width_ratio=1.0))
    assert student.config.decoder_layers == 1 and not student.config.share_encoder_decoder_embeddings
    for name in ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight", "lm_head.weight",
                 "final_logits_bias"):
        assert torch.equal(student.state_dict()[name], teacher.state_dict()[name]), name
    batch = tokenizer(["Kezdetben teremtette Isten az eget."], text_target=["In the beginning God created."],
                      return_tensors="pt")
    batch["decoder_input_ids"] = student.prepare_decoder_input_ids_from_labels(labels=batch["labels"])
    kd = LiveTeacher(teacher).logits(batch)
    assert kd.shape == student(**batch).logits.shape and kd.shape[-1] == target_vocab_size(tokenizer)


@needs_ct2
@pytest.mark.parametrize("separate", [False, True], ids=["shared", "separate"])
def test_ct2_equals_hf_after_training_moved_the_pad_row(tmp_path, verse_pairs, separate, monkeypatch):
    pairs = _pairs(verse_pairs[:400], "hu-en")
    model_dir = opus_mt(tmp_path / "opus", pairs, separate=separate, src_size=500, tgt_size=300, layers=1,
                        train_steps=60)
    hf = HfTranslator.load(model_dir)
    assert _pad_row_norm(hf.model) > 0.1, "training should have moved the <pad> row (the decoder start)"
    from distilmt.export import export_ctranslate2

    out = export_ctranslate2(model_dir, tmp_path / "ct2", quantization="float32")
    parity = json.loads((out / EXPORT_INFO).read_text())["parity"]
    assert parity["passed"] and parity["float32"]["max_abs_logprob_diff"] < 1e-3
    sources = [h for _, h in verse_pairs[400:424]]  # unseen Hungarian verses
    hf_out = hf.translate(sources, num_beams=1, max_new_tokens=20)
    ct2_out = Ct2Translator(out, inter_threads=1).translate(sources, num_beams=1, max_new_tokens=20)
    assert len(set(hf_out)) > 10, "the trained stand-in should give varied output"
    assert ct2_out == hf_out
    int8 = json.loads((export_ctranslate2(model_dir, tmp_path / "int8") / EXPORT_INFO).read_text())["parity"]
    assert int8["passed"] and int8["exported"]["mean_abs_logprob_diff"] < int8["quantized_tolerance"]
    if not separate:  # CTranslate2's own Marian loader (zero start vector, <pad> row dropped) is refused
        monkeypatch.setattr("distilmt.export._loader_for", lambda model: None)
        with pytest.raises(ExportError, match=r"ct2-stock: the CTranslate2 conversion does not compute") as err:
            export_ctranslate2(model_dir, tmp_path / "ct2-stock", quantization="float32")
        assert "\n" not in str(err.value) and not (tmp_path / "ct2-stock").exists()


@needs_ct2
def test_ct2_labels_of_an_opus_mt_teacher_are_the_hf_labels_at_the_length_cap(tmp_path, verse_pairs):
    """opus-mt forces </s> into the last position (forced_eos_token_id) and bans <pad>: the CTranslate2 label path
    does the same, so at float32 its beam labels and scores are HF's also where a translation reaches the cap.
    Measured here at an 8-token cap: 28 of 32 labels identical (1 of 32 before). Not all: HF's forced </s> costs
    nothing in its beam ranking (the processor leaves it the only token), CTranslate2 stops one token early and
    ranks those hypotheses by their own length."""
    from distilmt.config import SeqKDConfig
    from distilmt.export import export_ctranslate2
    from distilmt.models.generation import ct2_translate_scored, translate_scored

    model_dir = opus_mt(tmp_path / "opus", _pairs(verse_pairs[:400], "hu-en"), layers=1, train_steps=60)
    model, tokenizer = load_seq2seq(model_dir)
    ct2 = Ct2Translator(export_ctranslate2(model_dir, tmp_path / "ct2", quantization="float32"), inter_threads=1)
    cfg = SeqKDConfig(num_beams=4, max_new_tokens=8)
    sources = [h for _, h in verse_pairs[400:432]]
    hf_labels, ct2_labels = translate_scored(model, tokenizer, sources, cfg), ct2.translate_scored(sources, cfg)
    at_cap = sum(len(tokenizer(text_target=row[0][0])["input_ids"]) >= cfg.max_new_tokens for row in hf_labels)
    assert at_cap >= 8, "most labels should reach the 8-token cap, the case under test"
    same = [(a[0], b[0]) for a, b in zip(ct2_labels, hf_labels) if a[0][0] == b[0][0]]
    assert len(same) >= 0.8 * len(sources)
    for (_, ct2_score), (_, hf_score) in same:  # the score counts the forced </s> as HF's does
        assert ct2_score == pytest.approx(hf_score, abs=1e-3)
    # an export without a decoding record (made before it was written) still makes labels, without those rules
    plain = ct2_translate_scored(ct2.translator, ct2.tokenizer, sources, cfg, ct2.info.get("max_positions"))
    assert len(plain) == len(sources) and all(row and row[0][0] for row in plain)


@pytest.mark.parametrize("direction, separate", [("en-hu", False), ("hu-en", False), ("hu-en", True)],
                         ids=["en-hu", "hu-en", "hu-en-separate"])
def test_distilmt_run_with_an_opus_mt_teacher(tmp_path, verse_pairs, direction, separate):
    pairs = _pairs(verse_pairs[:600], direction)
    teacher = opus_mt(tmp_path / "opus-mt", pairs[:400], separate=separate, src_size=500,
                      tgt_size=300 if separate else 500, train_steps=30)
    corpus = tmp_path / "corpus.tsv"
    write_tsv(verse_pairs[:600], corpus)  # en \t hu: --direction picks the columns
    cfg = write_config(tmp_path, data__max_tokens=48, data__dev_size=20, data__test_size=12, eval__speed_sentences=0,
                       eval__semantic=False, eval__export_ct2=HAS_CT2, monitor__enabled=False)
    run_dir = tmp_path / "run"
    assert main(["run", "--config", str(cfg), "--teacher", str(teacher), "--corpus", str(corpus), "--direction",
                 direction, "--run-dir", str(run_dir)]) == 0
    tokenizer = MarianTokenizer.from_pretrained(run_dir / "tokenizer")  # prepare-data took the teacher's
    assert tokenizer.separate_vocabs == separate
    rows = {r["name"]: r for r in json.loads((run_dir / "metrics.json").read_text())["models"]}
    assert {"teacher", "student-baseline", "student-kd"} <= rows.keys()
    student, _ = load_seq2seq(run_dir / "student-kd")
    assert student.config.decoder_layers == 1
    assert student.get_output_embeddings().weight.shape[0] == target_vocab_size(tokenizer)
    if not HAS_CT2:
        return
    assert "student-kd-ct2-int8" in rows
    info = json.loads((run_dir / "export" / "student-kd-ct2-int8" / EXPORT_INFO).read_text())
    assert info["parity"]["passed"] and info["parity"]["float32"]["max_abs_logprob_diff"] < 1e-3
    assert main(["translate", "student-kd-ct2-int8", "--run-dir", str(run_dir), "--text", pairs[500][0],
                 "--beams", "1"]) == 0
