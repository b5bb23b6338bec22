"""Progressive distillation (method 8): chain sizes computed by hand, each stage taught by the previous one,
complete stages skipped, wrong factors refused in one line. Tiny models on real verse pairs."""

from __future__ import annotations

import json

import pytest

from distilmt.cli import main
from distilmt.config import ConfigError, DistillConfig, StudentConfig, TeacherConfig
from distilmt.models.build import seq2seq_config
from distilmt.recipes.progressive import heads_match, plan_chain, stage_heads
from helpers import write_config


@pytest.fixture(autouse=True, scope="module")
def _cache(tmp_path_factory):
    """One corpus cache for the module's runs (the built-in corpus is aligned once, not per test)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DISTILMT_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def _shapes(teacher: dict, student: StudentConfig, factor: float, tokenizer, match_heads: bool = False) -> list[tuple]:
    config = seq2seq_config(TeacherConfig(**teacher), tokenizer)
    return [(s["d_model"], s["heads"], s["ffn"], s["enc"], s["dec"])
            for _, s in plan_chain(config, student, factor, match_heads=match_heads)]


def test_chain_sizes_by_hand(tokenizer):
    deep = dict(d_model=32, encoder_layers=6, decoder_layers=6, ffn_dim=64, heads=4)
    # Target: encoder round(6 x 0.34) = 2, decoder round(6 x 0.17) = 1. Stage k ratio 0.7^k:
    # 0.7 -> round(4.2) = 4 | 0.49 -> round(2.94) = 3 | 0.343 -> round(2.058) = 2 both sides |
    # 0.2401 -> encoder clamped at 0.34 (2), decoder round(1.44) = 1: the target, the chain ends.
    assert _shapes(deep, StudentConfig(depth_ratio=0.34, decoder_depth_ratio=0.17), 0.7, tokenizer) == [
        (32, 4, 64, 4, 4), (32, 4, 64, 3, 3), (32, 4, 64, 2, 2), (32, 4, 64, 2, 1)]
    narrow = dict(d_model=32, encoder_layers=2, decoder_layers=2, ffn_dim=64, heads=4)
    # Width too: 0.7 -> heads round(2.8) = 3, d_model round(32 x 0.7 / 3) x 3 = 21, ffn round(44.8) = 45,
    # layers round(1.4) = 1; 0.49 < 0.5: every ratio is the target's (d16, 2 heads, ffn 32, 1+1).
    half = StudentConfig(depth_ratio=0.5, width_ratio=0.5, heads_ratio=0.5)
    assert _shapes(narrow, half, 0.7, tokenizer) == [(21, 3, 45, 1, 1), (16, 2, 32, 1, 1)]
    # 0.9 keeps 2 layers (round(1.8)) and width 1: a stage the teacher's own size is dropped, as are repeats.
    assert _shapes(narrow, StudentConfig(depth_ratio=0.5), 0.9, tokenizer) == [(32, 4, 64, 1, 1)]
    # A factor at or below the target ratios goes straight to the student.
    assert _shapes(deep, StudentConfig(depth_ratio=0.5), 0.4, tokenizer) == [(32, 4, 64, 3, 3)]


def test_under_attention_kd_every_stage_heads_match_its_teacher(tokenizer):
    # The aggressive preset's ratios on its 8-head 6+6 teacher (width shrunk): heads round(8 x 0.7) = 6 would face
    # 8 teacher heads (and teach 4), which attention KD cannot match; under attention KD stage 1 keeps 8 heads
    # (8/6 is nearer 1 than 6/4), its width round(64 x 0.7 / 8) x 8 = 48; the rest as without it.
    teacher = dict(d_model=64, encoder_layers=6, decoder_layers=6, ffn_dim=256, heads=8)
    aggressive = StudentConfig(depth_ratio=0.5, decoder_depth_ratio=0.17, width_ratio=0.5, heads_ratio=0.5)
    assert _shapes(teacher, aggressive, 0.7, tokenizer) == [
        (42, 6, 179, 4, 4), (32, 4, 128, 3, 3), (32, 4, 128, 3, 2), (32, 4, 128, 3, 1)]
    assert _shapes(teacher, aggressive, 0.7, tokenizer, match_heads=True) == [
        (48, 8, 179, 4, 4), (32, 4, 128, 3, 3), (32, 4, 128, 3, 2), (32, 4, 128, 3, 1)]
    assert stage_heads(6, 8, 4) == 8 and stage_heads(5, 8, 1) == 4 and stage_heads(3, 4, 2) == 4
    assert stage_heads(5, 6, 4) == 5  # 6 and 4 heads cannot be matched at all: the ratio's count is kept
    # any chain whose teacher and target match: each stage matches the one before it (the teacher first)
    for heads, d_model in ((4, 32), (8, 64), (12, 48), (16, 64)):
        config = seq2seq_config(TeacherConfig(d_model=d_model, encoder_layers=6, decoder_layers=6, ffn_dim=64,
                                              heads=heads), tokenizer)
        for ratio in (0.25, 0.34, 0.5, 0.75):
            for factor in (0.5, 0.7, 0.8, 0.9):
                student = StudentConfig(depth_ratio=0.5, width_ratio=ratio, heads_ratio=ratio)
                chain = [heads] + [s["heads"] for _, s in plan_chain(config, student, factor, match_heads=True)]
                if heads_match(chain[0], chain[-1]):
                    assert all(heads_match(a, b) for a, b in zip(chain, chain[1:])), (heads, ratio, factor, chain)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(progressive_factor=1.0), "distill.progressive_factor: 1.0 must be in (0, 1)"),
    (dict(progressive_factor=-0.5), "distill.progressive_factor: -0.5 must be in (0, 1)"),
    (dict(progressive_factor=True), "distill.progressive_factor: True must be in (0, 1)"),
    (dict(progressive_factor=0.7, teacher_cache=True), "distill.progressive_factor: each stage learns from"),
    (dict(progressive_factor=0.7, teachers=["a", "b"]), "distill.progressive_factor: the chain starts from"),
])
def test_wrong_factor_values_are_refused_naming_the_key(kwargs, needle):
    with pytest.raises(ConfigError) as info:
        DistillConfig(**kwargs)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_wrong_factor_from_the_cli_is_one_line(tmp_path, capsys):
    code = main(["prepare-data", "--config", str(write_config(tmp_path)), "--set", "distill.progressive_factor=1.5",
                 "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "distill.progressive_factor" in err[0]
    assert main(["distill", "--only", "progressive", "--config", str(write_config(tmp_path)),
                 "--run-dir", str(tmp_path / "run2")]) == 2
    assert "progressive_factor: is 0 (off)" in capsys.readouterr().err


def test_each_stage_learns_from_the_previous_is_evaluated_and_skipped_when_complete(tmp_path, capsys):
    from distilmt.models.loading import load_seq2seq
    from distilmt.recipes import pipeline

    run_dir = tmp_path / "run"
    cfg_file = write_config(tmp_path, student__depth_ratio=0.5, student__width_ratio=0.5, student__heads_ratio=0.5)
    assert main(["train-teacher", "--config", str(cfg_file), "--set", "distill.progressive_factor=0.7",
                 "--set", "monitor.enabled=false", "--set", "eval.speed_sentences=0", "--set", "eval.semantic=false",
                 "--set", "data.max_test_sentences=6", "--run-dir", str(run_dir)]) == 0
    cfg = pipeline.open_run(run_dir)
    records = pipeline.distill_progressive(cfg, run_dir)

    stage1, final = run_dir / "progressive" / "stage-1", run_dir / pipeline.PROGRESSIVE_STUDENT
    assert [r["dir"] for r in records] == [str(stage1), str(final)]
    assert [r["teacher"] for r in records] == [str(run_dir / "teacher"), str(stage1)]
    teacher, _ = load_seq2seq(run_dir / "teacher")
    stage_model, _ = load_seq2seq(stage1)
    final_model, _ = load_seq2seq(final)
    # The model each stage was taught by is the previous stage's (by its size), and each saved stage has the
    # hand-computed shape of test_chain_sizes_by_hand.
    assert records[0]["teacher_params"] == teacher.num_parameters()
    assert records[1]["teacher_params"] == records[0]["params"] == stage_model.num_parameters()
    assert (stage_model.config.d_model, stage_model.config.encoder_attention_heads,
            stage_model.config.encoder_ffn_dim) == (21, 3, 45)
    assert (final_model.config.d_model, final_model.config.encoder_attention_heads, final_model.config.encoder_layers,
            final_model.config.decoder_layers) == (16, 2, 1, 1)
    for record in records:
        for key in ("dev_bleu", "dev_chrf", "test_bleu", "test_chrf"):
            assert 0 <= record[key] <= 100, key
        assert isinstance(record["collapsed"], bool)
    assert json.loads((run_dir / "progressive" / "chain.json").read_text())["stages"] == records

    # Complete stages are skipped (nothing rewritten); a stage without its marker is trained again, alone.
    stamp = lambda d: (d / "model.safetensors").stat().st_mtime_ns  # noqa: E731
    before = stamp(stage1), stamp(final)
    assert pipeline.distill_progressive(cfg, run_dir) == records
    assert (stamp(stage1), stamp(final)) == before
    (final / ".complete").unlink()
    assert main(["distill", "--only", "progressive", "--run-dir", str(run_dir), "--resume"]) == 0
    assert stamp(stage1) == before[0] and stamp(final) != before[1] and (final / ".complete").is_file()
    # evaluate includes the progressive student next to the others
    rows = pipeline.evaluate(cfg, run_dir, models=("teacher", pipeline.PROGRESSIVE_STUDENT))
    assert [r["name"] for r in rows] == ["teacher", pipeline.PROGRESSIVE_STUDENT]
