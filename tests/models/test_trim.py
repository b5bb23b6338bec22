"""Vocabulary trimming and named student shapes: the trimmed tokenizer tokenises the training corpus exactly as the
teacher's does (id-mapped) on the run's own Unigram tokenizer, a BPE tokenizer and a genuine MarianTokenizer; KD
over the kept vocabulary is the teacher renormalised over it (a toy case by hand, live and cached alike); a trimmed
student trains, saves, reloads with plain transformers and exports to CTranslate2 with the same greedy output."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    MarianConfig,
    MarianMTModel,
    MarianTokenizer,
    PreTrainedTokenizerFast,
)

from conftest import TINY_TEACHER
from distilmt.config import STUDENT_SHAPES, DistillConfig, StudentConfig, TeacherConfig, TrainConfig
from distilmt.data.batching import ParallelDataset, Seq2SeqCollator
from distilmt.data.tokenizer import train_tokenizer
from distilmt.errors import ConfigError
from distilmt.export import export_ctranslate2
from distilmt.losses import forward_kl, sparse_forward_kl
from distilmt.models.build import build_model, derive_student, student_shape
from distilmt.models.shapes import SHAPES
from distilmt.models.size import count_parameters
from distilmt.models.translators import Ct2Translator, HfTranslator
from distilmt.models.trim import VOCAB_MAP_FILE, VocabMap, kept_token_ids, trim_student, trim_tokenizer
from distilmt.teachers.cache import CachedTeacher, build_teacher_cache
from distilmt.teachers.signal import LiveTeacher, VocabMappedTeacher
from distilmt.training.loop import train_seq2seq
from helpers import HAS_CT2


def _same_tokens(full, trimmed, vocab_map: VocabMap, pairs) -> None:
    """Every source (as text) and target (as text_target) gets the teacher's ids, through the map."""
    for source, target in pairs:
        for kwargs in ({"text": source}, {"text_target": target}):
            teacher_ids = full(**kwargs)["input_ids"]
            student_ids = trimmed(**kwargs)["input_ids"]
            assert vocab_map.kept[torch.tensor(student_ids)].tolist() == teacher_ids, kwargs


@pytest.fixture(scope="module")
def run_tokenizer(tmp_path_factory, verse_pairs):
    """The run's own tokenizer (a joint Unigram model), big enough that a corpus slice uses part of it."""
    return train_tokenizer((t for pair in verse_pairs for t in pair), 3000, tmp_path_factory.mktemp("tok"))


def marian_tokenizer(out_dir: Path, pairs, vocab_size: int = 800):
    """A genuine MarianTokenizer: source.spm and target.spm trained here on the pairs, one vocab.json in the Opus-MT
    layout (</s> 0, <unk> 1, the pieces of both models, <pad> last)."""
    spm = pytest.importorskip("sentencepiece")
    out_dir.mkdir(parents=True, exist_ok=True)
    pieces = ["</s>", "<unk>"]
    for side, name in ((0, "source"), (1, "target")):
        buffer = io.BytesIO()
        spm.SentencePieceTrainer.train(sentence_iterator=iter([p[side] for p in pairs]), model_writer=buffer,
                                       vocab_size=vocab_size, model_type="unigram", character_coverage=1.0,
                                       unk_id=1, eos_id=2, bos_id=-1, pad_id=0, minloglevel=2)
        (out_dir / f"{name}.spm").write_bytes(buffer.getvalue())
        processor = spm.SentencePieceProcessor(model_file=str(out_dir / f"{name}.spm"))
        pieces += [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    vocab = {piece: i for i, piece in enumerate(dict.fromkeys(p for p in pieces if p != "<pad>"))}
    vocab["<pad>"] = len(vocab)
    (out_dir / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    MarianTokenizer(source_spm=str(out_dir / "source.spm"), target_spm=str(out_dir / "target.spm"),
                    vocab=str(out_dir / "vocab.json"), source_lang="en", target_lang="hu").save_pretrained(out_dir)
    return AutoTokenizer.from_pretrained(str(out_dir))


# -- the tokenizers ---------------------------------------------------------------------------------------------
def test_trimmed_run_tokenizer_tokenises_the_corpus_exactly_as_the_teachers(tmp_path, run_tokenizer, verse_pairs):
    train = verse_pairs[:300]
    kept = kept_token_ids(run_tokenizer, train)
    assert len(kept) < 0.8 * len(run_tokenizer)
    trimmed = trim_tokenizer(run_tokenizer, kept, tmp_path / "trimmed")
    vocab_map = VocabMap(kept, len(run_tokenizer))
    assert len(trimmed) == len(kept) and type(AutoTokenizer.from_pretrained(tmp_path / "trimmed")) is type(trimmed)
    _same_tokens(run_tokenizer, trimmed, vocab_map, train)
    for name in ("pad_token", "eos_token", "unk_token", "bos_token"):  # specials kept, at their mapped ids
        assert kept[getattr(trimmed, f"{name}_id")] == getattr(run_tokenizer, f"{name}_id")
    # text outside the corpus: smaller pieces of the kept vocabulary, decoded back to the same text
    unseen = verse_pairs[1000][1]
    ids = trimmed(unseen)["input_ids"]
    assert trimmed.unk_token_id not in ids and trimmed.decode(ids, skip_special_tokens=True) == unseen


def test_added_tokens_such_as_language_codes_are_kept_after_the_pieces(tmp_path, run_tokenizer, verse_pairs):
    run_tokenizer.save_pretrained(tmp_path / "full")
    full = AutoTokenizer.from_pretrained(tmp_path / "full")  # NLLB-style codes: added tokens after the pieces
    full.add_special_tokens({"additional_special_tokens": ["hun_Latn", "eng_Latn"]})
    train = [(f"eng_Latn {s}", f"hun_Latn {t}") for s, t in verse_pairs[:100]]
    kept = kept_token_ids(full, verse_pairs[:100])  # the codes are kept although this corpus never writes them
    assert {full.convert_tokens_to_ids("hun_Latn"), full.convert_tokens_to_ids("eng_Latn")} <= set(kept)
    trimmed = trim_tokenizer(full, kept, tmp_path / "trimmed")
    assert trimmed.convert_tokens_to_ids(["hun_Latn", "eng_Latn"]) == [len(trimmed) - 2, len(trimmed) - 1]
    _same_tokens(full, trimmed, VocabMap(kept, len(full)), train)


def test_trimmed_bpe_tokenizer_keeps_the_merge_intermediates(tmp_path, verse_pairs):
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator((t for pair in verse_pairs for t in pair),
                            trainers.BpeTrainer(vocab_size=2000, special_tokens=["<pad>", "</s>", "<unk>"],
                                                show_progress=False))
    full = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    train = verse_pairs[:300]
    kept = kept_token_ids(full, train)
    assert len(kept) < len(full)
    trimmed = trim_tokenizer(full, kept, tmp_path / "bpe")
    _same_tokens(full, trimmed, VocabMap(kept, len(full)), train)


def test_trimmed_marian_tokenizer_tokenises_the_corpus_exactly_as_the_teachers(tmp_path, verse_pairs):
    full = marian_tokenizer(tmp_path / "marian", verse_pairs[:400])
    assert type(full).__name__ == "MarianTokenizer" and full.pad_token_id == len(full) - 1
    train = verse_pairs[:150]
    kept = kept_token_ids(full, train)
    assert len(kept) < 0.9 * len(full)
    trimmed = trim_tokenizer(full, kept, tmp_path / "trimmed")
    assert type(trimmed).__name__ == "MarianTokenizer" and len(trimmed) == len(kept)
    assert trimmed.pad_token_id == len(trimmed) - 1 and trimmed.eos_token_id == 0  # the Opus-MT layout is kept
    assert json.loads((tmp_path / "trimmed" / "vocab.json").read_text()) == \
        {full.convert_ids_to_tokens(old): new for new, old in enumerate(kept)}
    _same_tokens(full, trimmed, VocabMap(kept, len(full)), train)


# -- KD over the kept vocabulary -------------------------------------------------------------------------------
def test_kd_over_the_kept_vocabulary_is_the_teacher_renormalised_over_it_by_hand():
    teacher = torch.tensor([[[2.0, 1.0, 0.0, -1.0, 0.5]]])  # one position, 5 teacher tokens
    student = torch.tensor([[[0.5, -0.5, 1.0]]])  # the student has the kept 3: teacher ids 0, 2, 4
    vocab_map = VocabMap([0, 2, 4], 5)
    mask = torch.ones(1, 1, dtype=torch.bool)
    # by hand: p = the teacher's probabilities at ids 0, 2, 4, divided by their sum; q = softmax of the student
    z = [math.exp(v) for v in (2.0, 1.0, 0.0, -1.0, 0.5)]
    p_full = [v / sum(z) for v in z]
    kept_mass = p_full[0] + p_full[2] + p_full[4]
    p = [p_full[0] / kept_mass, p_full[2] / kept_mass, p_full[4] / kept_mass]
    s = [math.exp(v) for v in (0.5, -0.5, 1.0)]
    q = [v / sum(s) for v in s]
    by_hand = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    assert by_hand == pytest.approx(0.369651, abs=1e-5)
    kl, _ = forward_kl(student, vocab_map.restrict_logits(teacher), mask)
    assert float(kl) == pytest.approx(by_hand, abs=1e-6)
    # a top-k teacher (a cache): top 3 = ids 0, 1, 4; id 1 is not kept, so p is 0 and 4 renormalised
    log_p = torch.log_softmax(teacher, -1)
    values, ids = log_p.topk(3, -1)
    s_ids, s_logp = vocab_map.restrict_topk(ids, values, labels=torch.tensor([[2]]))
    assert sorted(s_ids[0, 0][torch.isfinite(s_logp[0, 0])].tolist()) == [0, 2]
    p2 = [p_full[0] / (p_full[0] + p_full[4]), p_full[4] / (p_full[0] + p_full[4])]
    by_hand_topk = p2[0] * math.log(p2[0] / q[0]) + p2[1] * math.log(p2[1] / q[2])
    kl_topk, _ = sparse_forward_kl(student, s_ids, s_logp, mask)
    assert float(kl_topk) == pytest.approx(by_hand_topk, abs=1e-6)
    # none of the top k kept: the reference label with log-prob 0 (KD = the reference's cross-entropy there)
    s_ids, s_logp = VocabMap([2, 3], 5).restrict_topk(ids, values, labels=torch.tensor([[1]]))
    assert s_ids[0, 0, 0] == 1 and s_logp[0, 0, 0] == 0 and torch.isinf(s_logp[0, 0, 1:]).all()


def test_live_and_cached_teachers_give_the_same_kd_through_the_vocab_map(tmp_path, run_tokenizer, verse_pairs):
    pairs = verse_pairs[:60]
    teacher = build_model(TeacherConfig(**TINY_TEACHER), run_tokenizer, seed=0)
    student = derive_student(teacher, StudentConfig(depth_ratio=0.5), seed=0)
    trimmed, tokenizer, vocab_map = trim_student(student, run_tokenizer, pairs, tmp_path / "student")
    assert (tmp_path / "student" / VOCAB_MAP_FILE).is_file() and VocabMap.load(tmp_path / "student").kept.equal(
        vocab_map.kept)
    build_teacher_cache(tmp_path / "cache", pairs, run_tokenizer, teacher, top_k=len(run_tokenizer), dtype="float32",
                        teacher_id="t")
    live = VocabMappedTeacher(LiveTeacher(teacher), vocab_map)
    cached = VocabMappedTeacher(CachedTeacher.open(tmp_path / "cache", pairs, run_tokenizer, "t"), vocab_map)
    assert cached.has_topk and cached.needs_example_index and live.has_outputs and live.model is teacher
    data = ParallelDataset(pairs, tokenizer, with_index=True)
    batch = Seq2SeqCollator(tokenizer.pad_token_id, trimmed.config.decoder_start_token_id)([data[i] for i in
                                                                                             range(8)])
    mask = batch["labels"].ne(-100)
    logits = trimmed(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     decoder_input_ids=batch["decoder_input_ids"]).logits
    restricted = live.logits(batch)
    assert restricted.shape[-1] == len(vocab_map) == logits.shape[-1]
    # the live teacher read the teacher's ids: its restricted logits are its full logits at the kept ids
    full_batch = {k: vocab_map.to_teacher(v) if k in ("input_ids", "decoder_input_ids") else v for k, v in batch.items()}
    torch.testing.assert_close(restricted, LiveTeacher(teacher).logits(full_batch)[..., vocab_map.kept])
    kl_live, _ = forward_kl(logits, restricted, mask, temperature=2.0)
    kl_cached, _ = sparse_forward_kl(logits, *cached.topk(batch), mask, temperature=2.0)
    kl_dense, _ = forward_kl(logits, cached.logits(batch), mask, temperature=2.0)
    torch.testing.assert_close(kl_cached, kl_live, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(kl_dense, kl_live, rtol=1e-4, atol=1e-4)


# -- shapes -----------------------------------------------------------------------------------------------------
def test_named_shapes_replace_the_ratios():
    assert set(SHAPES) == set(STUDENT_SHAPES) - {""}
    opus = MarianConfig(vocab_size=1000, d_model=512, encoder_layers=6, decoder_layers=6, encoder_ffn_dim=2048,
                        decoder_ffn_dim=2048, encoder_attention_heads=8, decoder_attention_heads=8, pad_token_id=999,
                        decoder_start_token_id=999)
    assert student_shape(opus, StudentConfig(shape="tiny")) == \
        {"d_model": 256, "ffn": 1536, "heads": 8, "enc": 6, "dec": 2}
    assert student_shape(opus, StudentConfig(shape="base", depth_ratio=0.1))["enc"] == 6
    assert student_shape(opus, StudentConfig())["d_model"] == 512  # no shape: the ratios, as before
    base = derive_student(MarianMTModel(opus), StudentConfig(shape="base"))  # same width: teacher layers copied
    assert base.config.decoder_layers == 2 and base.config.encoder_ffn_dim == 2048
    with pytest.raises(ConfigError, match="student.shape"):
        StudentConfig(shape="huge")
    with pytest.raises(ConfigError, match="student.trim_vocab"):
        StudentConfig(kind="causal", path="x", trim_vocab=True)


# -- a trimmed student end to end -------------------------------------------------------------------------------
def _tiny_marian_teacher(tokenizer):
    """A tiny Marian teacher in the Opus-MT layout: <pad> last, the decoder starts from <pad>."""
    config = MarianConfig(vocab_size=len(tokenizer), d_model=32, encoder_layers=2, decoder_layers=2,
                          encoder_ffn_dim=64, decoder_ffn_dim=64, encoder_attention_heads=4, decoder_attention_heads=4,
                          max_position_embeddings=128, dropout=0.0, pad_token_id=tokenizer.pad_token_id,
                          eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id,
                          forced_eos_token_id=None)  # Opus-MT forces eos at max_length; CTranslate2 does not
    torch.manual_seed(0)
    model = MarianMTModel(config)
    model.generation_config.bad_words_ids = [[tokenizer.pad_token_id]]
    return model


@pytest.mark.parametrize("kind", ["run-tokenizer", "marian"])
def test_trimmed_student_trains_saves_reloads_and_exports(tmp_path, run_tokenizer, verse_pairs, kind):
    train, probe = verse_pairs[:240], [s for s, _ in verse_pairs[300:316]]
    if kind == "marian":
        full = marian_tokenizer(tmp_path / "marian", verse_pairs[:400])
        teacher = _tiny_marian_teacher(full)
    else:
        full = run_tokenizer
        teacher = build_model(TeacherConfig(**TINY_TEACHER), full, seed=0)
    student = derive_student(teacher, StudentConfig(depth_ratio=0.5), seed=0)
    out = tmp_path / "student"
    trimmed, tokenizer, vocab_map = trim_student(student, full, train, out)
    assert count_parameters(trimmed)["params_embedding"] < count_parameters(student)["params_embedding"]
    row = int(vocab_map.kept[5])  # the embedding rows are the teacher-derived model's rows at the kept ids
    torch.testing.assert_close(trimmed.get_input_embeddings().weight[5], student.get_input_embeddings().weight[row])
    if hasattr(trimmed, "final_logits_bias"):
        assert trimmed.final_logits_bias.shape[-1] == len(vocab_map)
    assert trimmed.generation_config.decoder_start_token_id == vocab_map.student_id(
        teacher.generation_config.decoder_start_token_id)
    cfg = TrainConfig(max_steps=8, batch_tokens=600, warmup_steps=1, learning_rate=3e-4, bf16=False,
                      eval_every_epoch=False)
    trainer = train_seq2seq(trimmed, tokenizer, train, [], cfg, out, tmp_path / "tb", max_tokens=24,
                            teacher=VocabMappedTeacher(LiveTeacher(teacher), vocab_map),
                            distill=DistillConfig(alpha=0.2, beta=0.8, temperature=2.0))
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert logged[-1]["loss"] < logged[0]["loss"] and logged[-1]["kd"] > 0
    # plain transformers loads it: the same model, and a tokenizer giving the trimmed ids
    model = AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    reloaded = AutoTokenizer.from_pretrained(out)
    assert model.config.vocab_size == len(reloaded) == len(vocab_map)
    _same_tokens(full, reloaded, vocab_map, train[:50])
    encoded = reloaded(probe, return_tensors="pt", padding=True)
    trainer.model.eval()
    for generated in (model.generate(**encoded, num_beams=1, max_new_tokens=16),
                      trainer.model.generate(**encoded, num_beams=1, max_new_tokens=16)):
        assert reloaded.batch_decode(generated, skip_special_tokens=True) == \
            reloaded.batch_decode(model.generate(**encoded, num_beams=1, max_new_tokens=16), skip_special_tokens=True)
    if HAS_CT2:  # CTranslate2 (the stock Marian loader for the Opus-MT layout) translates like HF greedy
        hf = HfTranslator.load(out).translate(probe, num_beams=1, batch_size=8, max_new_tokens=16)
        export_ctranslate2(out, tmp_path / "ct2", quantization="float32")
        ct2 = Ct2Translator(tmp_path / "ct2", inter_threads=1).translate(probe, num_beams=1, batch_size=8,
                                                                          max_new_tokens=16)
        assert ct2 == hf and len(set(" ".join(hf).split())) >= 3  # a few steps: not a translator, but many tokens


def test_a_run_with_trimmed_students_and_a_teacher_cache(tmp_path, monkeypatch):
    """The pipeline end to end with student.trim_vocab (and the teacher cache): each student directory has its own
    tokenizer and trimmed_vocab.json, plain transformers loads it, and its CTranslate2 export is evaluated."""
    from distilmt.cli import main
    from helpers import write_config

    monkeypatch.setenv("DISTILMT_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    config = write_config(tmp_path, student__trim_vocab=True, distill__teacher_cache=True, eval__speed_sentences=0,
                          eval__semantic=False)
    assert main(["run", "--config", str(config), "--run-dir", str(run_dir)]) == 0
    rows = {r["name"]: r for r in json.loads((run_dir / "metrics.json").read_text())["models"]}
    assert {"teacher", "student-baseline", "student-kd", "student-kd-ct2-int8"} <= set(rows)
    for name in ("student-baseline", "student-kd"):
        vocab_map = VocabMap.load(run_dir / name)
        assert vocab_map is not None and vocab_map.teacher_size == len(AutoTokenizer.from_pretrained(run_dir / "teacher"))
        assert len(AutoTokenizer.from_pretrained(run_dir / name)) == len(vocab_map) == \
            AutoModelForSeq2SeqLM.from_pretrained(run_dir / name).config.vocab_size
    assert "trimmed the vocabulary" in (run_dir / "run.log").read_text(encoding="utf-8")
