"""The teacher cache on tiny models and real text: it stores what the live teacher says, refuses to be used with
anything else, resumes to the same bytes, gives the live teacher's loss when k = vocabulary, and trains a
student with no teacher model anywhere."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_TEACHER
from distilmt.config import DistillConfig, TeacherConfig, TrainConfig
from distilmt.data.batching import ParallelDataset, Seq2SeqCollator
from distilmt.errors import CacheError
from distilmt.models.build import build_model
from distilmt.rundir import teacher_fingerprint
from distilmt.teachers.cache import CachedTeacher, TeacherCache, build_teacher_cache, cache_fingerprint
from distilmt.teachers.signal import LiveTeacher


def _batch(pairs, tokenizer, model, indices, max_tokens=0):
    data = ParallelDataset(pairs, tokenizer, max_tokens, with_index=True)
    return Seq2SeqCollator(tokenizer.pad_token_id, model.config.decoder_start_token_id)([data[i] for i in indices])


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_round_trip_equals_the_live_teachers_top_k(tmp_path, tokenizer, tiny_teacher, verse_pairs):
    pairs = verse_pairs[:120]
    stats = build_teacher_cache(tmp_path / "c32", pairs, tokenizer, tiny_teacher, top_k=8, dtype="float32",
                                shard_size=50, batch_tokens=300)
    assert stats["n_examples"] == 120 and stats["k"] == 8 and 0 < stats["mean_topk_mass"] < 1
    fp = cache_fingerprint(pairs, tokenizer, teacher_fingerprint(tiny_teacher))
    cached = CachedTeacher.open(tmp_path / "c32", pairs, tokenizer, teacher_fingerprint(tiny_teacher))
    batch = _batch(pairs, tokenizer, tiny_teacher, [3, 49, 50, 51, 119])  # across shard boundaries
    mask = batch["labels"].ne(-100)
    live = torch.log_softmax(LiveTeacher(tiny_teacher).logits(batch).float(), -1)
    ids, logp = cached.topk(batch)
    live_values, live_ids = live.topk(8, dim=-1)
    torch.testing.assert_close(logp[mask], live_values[mask], rtol=0, atol=1e-5)
    torch.testing.assert_close(logp[mask], live.gather(-1, ids)[mask], rtol=0, atol=1e-5)
    assert (ids[mask] == live_ids[mask]).float().mean() > 0.99  # equal up to exact ties
    # The tail mass is what the top k leaves out; pad rows are finite and masked.
    rows = TeacherCache(tmp_path / "c32", fp).rows(49)
    assert len(rows) == int(mask[1].sum())
    np.testing.assert_allclose(rows["tail"], 1 - np.exp(rows["logp"]).sum(-1), atol=1e-5)
    assert torch.isfinite(logp).all()
    # The compact default (float16 log-probs, int16 ids) holds the same within fp16 rounding, in fewer bytes.
    small = build_teacher_cache(tmp_path / "c16", pairs, tokenizer, tiny_teacher, top_k=8, shard_size=50)
    ids16, logp16 = CachedTeacher.open(tmp_path / "c16", pairs, tokenizer, teacher_fingerprint(tiny_teacher)).topk(batch)
    assert json.loads((tmp_path / "c16" / "header.json").read_text())["ids_dtype"] == "int16"
    torch.testing.assert_close(logp16[mask], logp[mask], rtol=2e-3, atol=1e-3)
    assert small["bytes_per_token"] < stats["bytes_per_token"]
    assert small["bytes_per_token"] < 8 * (2 + 2) + 2 + 4  # ids + log-probs + tail, plus a little for offsets


def test_a_stale_cache_is_refused_in_one_line_naming_the_path_and_the_fix(tmp_path, tokenizer, tiny_teacher,
                                                                         verse_pairs):
    from distilmt.data.tokenizer import train_tokenizer

    pairs = verse_pairs[:60]
    cache_dir = tmp_path / "teacher-cache"
    build_teacher_cache(cache_dir, pairs, tokenizer, tiny_teacher, top_k=4, shard_size=32)
    teacher_id = teacher_fingerprint(tiny_teacher)
    CachedTeacher.open(cache_dir, pairs, tokenizer, teacher_id)  # the right inputs: accepted

    other_tokenizer = train_tokenizer((t for p in verse_pairs[:300] for t in p), 300, tmp_path / "other-tok")
    other_teacher = build_model(TeacherConfig(**TINY_TEACHER), tokenizer, seed=1)
    cases = [
        ((verse_pairs[1:61], tokenizer, teacher_id, 0), "other training pairs"),
        ((pairs, tokenizer, teacher_id, 20), "other training pairs"),  # another max_tokens keeps other pairs
        ((pairs, other_tokenizer, teacher_id, 0), "another tokenizer"),
        ((pairs, tokenizer, teacher_fingerprint(other_teacher), 0), "another teacher"),
    ]
    for (use_pairs, use_tok, use_teacher, max_tokens), what in cases:
        with pytest.raises(CacheError) as err:
            CachedTeacher.open(cache_dir, use_pairs, use_tok, use_teacher, max_tokens)
        message = str(err.value)
        assert "\n" not in message and what in message and str(cache_dir) in message
        assert f"distilmt cache-teacher --run-dir {tmp_path} --rebuild" in message and "delete" in message
    # Building over it with other pairs is refused too, and leaves it untouched.
    before = _files(cache_dir)
    with pytest.raises(CacheError, match="other training pairs"):
        build_teacher_cache(cache_dir, verse_pairs[1:61], tokenizer, tiny_teacher, top_k=4, shard_size=32)
    with pytest.raises(CacheError, match="other settings"):
        build_teacher_cache(cache_dir, pairs, tokenizer, tiny_teacher, top_k=5, shard_size=32)
    assert _files(cache_dir) == before


class _Crash(Exception):
    pass


def test_an_interrupted_build_resumes_to_the_same_bytes(tmp_path, tokenizer, tiny_teacher, verse_pairs):
    pairs = verse_pairs[:140]
    settings = dict(top_k=6, shard_size=30, batch_tokens=250)
    build_teacher_cache(tmp_path / "straight", pairs, tokenizer, tiny_teacher, **settings)

    def crash_after_two(done, total):
        assert total == 5
        if done == 2:
            raise _Crash

    resumed = tmp_path / "resumed"
    with pytest.raises(_Crash):
        build_teacher_cache(resumed, pairs, tokenizer, tiny_teacher, on_shard=crash_after_two, **settings)
    assert sorted(p.name for p in resumed.glob("shard-*")) == ["shard-00000.npy", "shard-00001.npy"]
    (resumed / "shard-00002.npy.tmp").write_bytes(b"half a shard")  # what a kill mid-write leaves
    with pytest.raises(CacheError, match="no complete teacher cache"):
        TeacherCache(resumed, cache_fingerprint(pairs, tokenizer, teacher_fingerprint(tiny_teacher)))
    first_shard = (resumed / "shard-00000.npy").stat().st_mtime_ns
    done = []
    build_teacher_cache(resumed, pairs, tokenizer, tiny_teacher, on_shard=lambda d, t: done.append(d), **settings)
    assert done == [3, 4, 5]  # continued from the first missing shard
    assert (resumed / "shard-00000.npy").stat().st_mtime_ns == first_shard
    assert _files(resumed) == _files(tmp_path / "straight")


def _trainer(tmp_path, student, data, teacher, distill):
    from transformers import Seq2SeqTrainingArguments

    from distilmt.training.trainer import DistilTrainer

    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, save_strategy="no",
                                    disable_tqdm=True, remove_unused_columns=False)
    return DistilTrainer(model=student, args=args, train_dataset=data, teacher=teacher, distill=distill,
                         label_smoothing=0.1)


@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-5), ("float16", 2e-3)])
def test_k_equal_vocabulary_gives_the_live_teachers_loss_and_gradient(tmp_path, tokenizer, tiny_teacher,
                                                                      verse_pairs, dtype, rtol):
    pairs = verse_pairs[:40]
    vocab = tiny_teacher.config.vocab_size
    build_teacher_cache(tmp_path / "c", pairs, tokenizer, tiny_teacher, top_k=vocab, dtype=dtype, shard_size=16)
    cached = CachedTeacher.open(tmp_path / "c", pairs, tokenizer, teacher_fingerprint(tiny_teacher))
    assert cached.cache.k == vocab
    student = build_model(TeacherConfig(**{**TINY_TEACHER, "decoder_layers": 1}), tokenizer, seed=3).train()
    batch = _batch(pairs, tokenizer, student, [0, 7, 15, 16, 33])
    distill = DistillConfig(alpha=0.5, beta=0.5, temperature=2.0)
    results = {}
    for name, teacher in (("live", LiveTeacher(copy.deepcopy(tiny_teacher))), ("cached", cached)):
        trainer = _trainer(tmp_path / name, student, ParallelDataset(pairs, tokenizer, with_index=True), teacher,
                           distill)
        student.zero_grad()
        loss = trainer.compute_loss(student, batch)
        loss.backward()
        results[name] = (loss.detach(), torch.cat([p.grad.flatten() for p in student.parameters()]))
    assert results["live"][0] > 0
    torch.testing.assert_close(results["cached"][0], results["live"][0], rtol=rtol, atol=0)
    torch.testing.assert_close(results["cached"][1], results["live"][1], rtol=rtol, atol=rtol * 1e-2)
    # The dense form (-inf off the stored ids) gives the same KL as the sparse one the trainer uses.
    from distilmt.losses import forward_kl, sparse_forward_kl

    with torch.no_grad():
        logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         decoder_input_ids=batch["decoder_input_ids"]).logits
        mask = batch["labels"].ne(-100)
        dense, _ = forward_kl(logits, cached.logits(batch), mask, 2.0)
        sparse, _ = sparse_forward_kl(logits, *cached.topk(batch), mask, 2.0)
    torch.testing.assert_close(dense, sparse, rtol=1e-5, atol=0)


def test_training_from_the_cache_needs_no_teacher_model(tmp_path, tokenizer, tiny_teacher, verse_pairs):
    from distilmt.training.loop import train_seq2seq

    pairs, dev = verse_pairs[:100], verse_pairs[100:106]
    teacher_dir = tmp_path / "teacher"
    tiny_teacher.save_pretrained(teacher_dir)
    teacher_id = teacher_fingerprint(teacher_dir)
    build_teacher_cache(tmp_path / "cache", pairs, tokenizer, tiny_teacher, teacher_id=teacher_id, max_tokens=24,
                        top_k=8, shard_size=40)
    student = build_model(TeacherConfig(**{**TINY_TEACHER, "decoder_layers": 1}), tokenizer, seed=2)
    del tiny_teacher
    shutil.rmtree(teacher_dir)  # nothing left to load a teacher from
    teacher = CachedTeacher.open(tmp_path / "cache", pairs, tokenizer, teacher_id, max_tokens=24)
    cfg = TrainConfig(learning_rate=3e-3, warmup_steps=1, max_steps=6, batch_tokens=200, bf16=False)
    trainer = train_seq2seq(student, tokenizer, pairs, dev, cfg, tmp_path / "kd", tmp_path / "tb", 24,
                            teacher=teacher, distill=DistillConfig(alpha=0.5, beta=0.5, temperature=2.0))
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert trainer.state.global_step == 6 and logged
    assert all(np.isfinite(h["kd"]) and h["kd"] > 0 for h in logged)
    assert any("eval_bleu" in h for h in trainer.state.log_history)  # evaluation never sees example_index
    assert (tmp_path / "kd" / "model.safetensors").is_file()


def test_cli_cache_teacher_builds_skips_refuses_stale_and_rebuilds(tmp_path, capsys):
    from distilmt.cli import main
    from distilmt.rundir import load_tokenizer
    from helpers import write_config

    run_dir = tmp_path / "run"
    cfg = write_config(tmp_path)
    assert main(["prepare-data", "--config", str(cfg), "--set", "distill.teacher_cache=true", "--set",
                 "distill.cache_top_k=8", "--set", "monitor.enabled=false", "--run-dir", str(run_dir)]) == 0
    assert main(["cache-teacher", "--run-dir", str(run_dir)]) == 2  # no teacher yet: one clear line
    assert "train-teacher" in capsys.readouterr().err
    tokenizer = load_tokenizer(run_dir)
    build_model(TeacherConfig(**TINY_TEACHER), tokenizer, seed=0).save_pretrained(run_dir / "teacher")
    tokenizer.save_pretrained(run_dir / "teacher")
    (run_dir / "teacher" / ".complete").write_text("{}")

    assert main(["cache-teacher", "--run-dir", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "bytes per target token" in out and "top-8" in out
    stats = json.loads((run_dir / "teacher-cache" / "stats.json").read_text())
    assert stats["k"] == 8 and stats["bytes_per_token"] > 0 and stats["total_bytes"] > 0
    assert "bytes per target token" in (run_dir / "run.log").read_text()
    shard = run_dir / "teacher-cache" / "shard-00000.npy"
    before = shard.stat().st_mtime_ns
    assert main(["cache-teacher", "--run-dir", str(run_dir)]) == 0  # complete: skipped
    assert shard.stat().st_mtime_ns == before

    # distill uses the cache for the KD student.
    assert main(["distill", "--only", "kd", "--run-dir", str(run_dir)]) == 0
    assert (run_dir / "student-kd" / "model.safetensors").is_file()
    log_text = (run_dir / "run.log").read_text()
    assert "student-kd" in log_text and "kd " in log_text
    assert log_text.count("teacher-cache: complete, skipped") == 2  # the second cache-teacher, then distill

    # Another teacher in the run: the cache is stale, refused in one line until rebuilt.
    build_model(TeacherConfig(**TINY_TEACHER), tokenizer, seed=5).save_pretrained(run_dir / "teacher")
    capsys.readouterr()
    assert main(["cache-teacher", "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another teacher" in err[0] and "--rebuild" in err[0]
    assert main(["cache-teacher", "--run-dir", str(run_dir), "--rebuild"]) == 0
    assert shard.stat().st_mtime_ns != before


def test_example_index_is_added_only_when_asked(tokenizer, verse_pairs):
    collator = Seq2SeqCollator(tokenizer.pad_token_id, tokenizer.eos_token_id)
    plain = ParallelDataset(verse_pairs[:5], tokenizer)
    assert "example_index" not in collator([plain[4], plain[1]])
    indexed = ParallelDataset(verse_pairs[:5], tokenizer, with_index=True)
    batch = collator([indexed[4], indexed[1]])
    assert batch["example_index"].tolist() == [4, 1]
    assert torch.equal(batch["labels"], collator([plain[4], plain[1]])["labels"])


def test_other_divergences_train_from_the_cache_on_its_dense_logits(tmp_path, tokenizer, tiny_teacher, verse_pairs):
    from distilmt.config import ConfigError
    from distilmt.losses import skew_kl, target_mask
    from distilmt.training.loop import train_seq2seq
    from distilmt.training.trainer import DistilTrainer

    pairs, dev = verse_pairs[:40], verse_pairs[40:42]
    teacher_id = teacher_fingerprint(tiny_teacher)
    build_teacher_cache(tmp_path / "cache", pairs, tokenizer, tiny_teacher, teacher_id=teacher_id, max_tokens=48,
                        top_k=8, shard_size=40)
    teacher = CachedTeacher.open(tmp_path / "cache", pairs, tokenizer, teacher_id, max_tokens=48)
    # skew KL on the cache's dense -inf logits: finite, and what the loss function gives on them.
    batch = _batch(pairs, tokenizer, tiny_teacher, range(3), max_tokens=48)
    student = build_model(TeacherConfig(**{**TINY_TEACHER, "decoder_layers": 1}), tokenizer, seed=2)
    logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     decoder_input_ids=batch["decoder_input_ids"]).logits
    value, _ = skew_kl(logits, teacher.logits(batch), target_mask(batch["labels"]), alpha=0.5, temperature=2.0)
    value.backward()
    assert torch.isfinite(value) and value > 0
    assert all(torch.isfinite(p.grad).all() for p in student.parameters() if p.grad is not None)

    cfg = TrainConfig(learning_rate=3e-3, warmup_steps=1, max_steps=2, batch_tokens=200, bf16=False,
                      eval_every_epoch=False)
    distill = DistillConfig(alpha=0.5, beta=0.5, temperature=2.0, teacher_cache=True, divergence="tvd")
    trainer = train_seq2seq(student, tokenizer, pairs, dev, cfg, tmp_path / "kd", tmp_path / "tb", 48,
                            teacher=teacher, distill=distill)
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert trainer.state.global_step == 2 and logged
    assert all(np.isfinite(h["kd"]) and h["kd"] > 0 for h in logged)

    # The reverse KL is infinite on a truncated distribution: refused, even when the config did not say cache.
    with pytest.raises(ConfigError, match="distill.divergence: reverse_kl"):
        DistilTrainer(model=student, args=trainer.args, train_dataset=trainer.train_dataset,
                      data_collator=trainer.data_collator, teacher=teacher,
                      distill=DistillConfig(divergence="reverse_kl"))


def test_tokenizer_fingerprint_ignores_truncation_and_padding_state(tokenizer):
    from distilmt.data.tokenizer import tokenizer_fingerprint
    from distilmt.teachers import cache

    before = tokenizer_fingerprint(tokenizer)
    definition = tokenizer.backend_tokenizer.to_str()
    tokenizer(["In the beginning God created the heavens and the earth.", "Light."], truncation=True, max_length=8,
              padding=True)
    assert tokenizer.backend_tokenizer.to_str() != definition  # the fast tokenizer now carries those settings
    assert tokenizer_fingerprint(tokenizer) == before
    assert cache.tokenizer_fingerprint is tokenizer_fingerprint  # one definition for the cache and seq-KD
    tokenizer.add_tokens(["<new-token>"])
    assert tokenizer_fingerprint(tokenizer) != before  # a real change still shows


def test_a_truncated_shard_is_one_line_with_the_fix(tmp_path, tokenizer, tiny_teacher, verse_pairs):
    pairs = verse_pairs[:60]
    build_teacher_cache(tmp_path / "cache", pairs, tokenizer, tiny_teacher, top_k=4, shard_size=30, batch_tokens=250)
    shard = tmp_path / "cache" / "shard-00001.npy"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # a copy cut off half-way
    with pytest.raises(CacheError, match=r"a teacher-cache file is damaged or missing .*--rebuild") as error:
        TeacherCache(tmp_path / "cache", cache_fingerprint(pairs, tokenizer, teacher_fingerprint(tiny_teacher)))
    assert "\n" not in str(error.value)
