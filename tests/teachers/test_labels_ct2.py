"""Sequence-level KD labels decoded by CTranslate2 (seqkd.engine=ct2): the same labels and scores as HF generate at
float32, mostly the same at int8 (with the agreement stats.json reports), resumable to the same bytes, never mixed
with labels of the other engine, and the teacher converted once into the run directory."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import pytest

from distilmt.config import ConfigError, RunConfig, SeqKDConfig, load_config
from distilmt.data.tokenizer import tokenizer_fingerprint
from distilmt.errors import LabelsError
from distilmt.models.generation import translate_scored
from distilmt.models.loading import load_seq2seq
from distilmt.models.translators import ct2_default_device
from distilmt.recipes.stages import labels_engine
from distilmt.rundir import teacher_fingerprint
from distilmt.teachers.labels import agreement_sample, build_distilled, labels_fingerprint
from helpers import make_tiny_model, needs_ct2, toy_sentences

pytestmark = needs_ct2


@pytest.fixture(scope="module", params=["marian", "prenorm"])
def run_dir(request, tmp_path_factory) -> Path:
    """RUN_DIR/teacher: a tiny teacher trained a little on a copy task (varied, imperfect beam outputs)."""
    run = tmp_path_factory.mktemp(f"ct2-labels-{request.param}")
    make_tiny_model(run / "teacher", arch=request.param, d_model=32, layers=2, train_steps=60)
    return run


def _engine(run_dir: Path, out: Path, **seqkd):
    cfg = dataclasses.replace(RunConfig(), seqkd=SeqKDConfig(**seqkd))
    return labels_engine(cfg, run_dir / "teacher", teacher_fingerprint(run_dir / "teacher"), out)


def _build(run_dir: Path, out: Path, sources, on_shard=None, **seqkd) -> dict:
    """What stages.generate_labels does, on the fixture's teacher."""
    tokenizer = load_seq2seq(run_dir / "teacher")[1]
    cfg, load, reference = _engine(run_dir, out, **seqkd)
    fp = labels_fingerprint(sources, tokenizer_fingerprint(tokenizer), teacher_fingerprint(run_dir / "teacher"), cfg)
    return build_distilled(out, sources, tokenizer, load, cfg, fp, on_shard=on_shard, reference=reference)


def _rows(out: Path) -> list[list[str]]:
    return [line.split("\t") for p in sorted(out.glob("shard-*.tsv")) for line in p.read_text().splitlines()]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != "stats.json"}


SETTINGS = dict(num_beams=4, max_new_tokens=10, shard_size=16, batch_tokens=120)


def test_ct2_float32_labels_are_the_hf_labels(run_dir, tmp_path):
    sources = toy_sentences(40, seed=11)
    hf = _build(run_dir, tmp_path / "hf", sources, engine="hf", num_return_sequences=2, **SETTINGS)
    ct2 = _build(run_dir, tmp_path / "ct2", sources, engine="ct2", ct2_quantization="float32",
                 num_return_sequences=2, **SETTINGS)
    assert "agreement" not in hf and ct2["agreement"]["against"] == "hf"
    hf_rows, ct2_rows = _rows(tmp_path / "hf"), _rows(tmp_path / "ct2")
    assert [r[0] for r in ct2_rows] == sources and len({r[1] for r in hf_rows}) > 10
    # At float32 the labels are HF's, but for a rare source where HF's beam search (early_stopping=False) keeps
    # searching past the point where CTranslate2 stops (beam_size hypotheses finished): e.g. a repetition cut at
    # max_new_tokens. Where the labels are the same, so are the teacher scores.
    same = [c[1] == h[1] for c, h in zip(ct2_rows, hf_rows)]
    assert sum(same) >= 0.9 * len(sources)
    assert [float(c[2]) for c, s in zip(ct2_rows, same) if s] == \
        pytest.approx([float(h[2]) for h, s in zip(hf_rows, same) if s], abs=2e-4)
    nbest = [[json.loads(line) for line in (tmp_path / d / "nbest.jsonl").read_text().splitlines()]
             for d in ("hf", "ct2")]
    same_nbest = [[h["text"] for h in a["hypotheses"]] == [h["text"] for h in b["hypotheses"]] for a, b in zip(*nbest)]
    assert sum(same_nbest) >= 0.85 * len(sources)
    assert ct2["agreement"]["exact_match"] == round(sum(same) / len(sources), 4)
    assert ct2["agreement"]["mean_abs_score_diff_identical"] < 2e-4
    # The teacher was converted once, into the run directory, and is reused.
    converted = run_dir / "teacher-ct2-float32"
    marker = json.loads((converted / ".complete").read_text())
    assert marker["teacher"] == teacher_fingerprint(run_dir / "teacher") and marker["quantization"] == "float32"
    before = (converted / "model.bin").stat().st_mtime_ns
    _build(run_dir, tmp_path / "again", sources[:5], engine="ct2", ct2_quantization="float32", **SETTINGS)
    assert (converted / "model.bin").stat().st_mtime_ns == before


def test_int8_agreement_is_what_it_reports(run_dir, tmp_path, caplog):
    sources = toy_sentences(60, seed=12)
    with caplog.at_level(logging.INFO, logger="distilmt"):
        stats = _build(run_dir, tmp_path / "d", sources, engine="ct2", ct2_quantization="int8",
                       agreement_sources=24, **SETTINGS)
    rows = _rows(tmp_path / "d")
    indices = agreement_sample(60, 24)
    assert len(set(indices)) == 24 and indices[0] == 0 and indices[-1] > 50
    model, tokenizer = load_seq2seq(run_dir / "teacher")
    hf = translate_scored(model, tokenizer, [sources[i] for i in indices], SeqKDConfig(**SETTINGS))
    same = [hyps[0][0] == rows[i][1] for i, hyps in zip(indices, hf)]
    diffs = [abs(hyps[0][1] - float(rows[i][2])) for i, hyps in zip(indices, hf)]
    agreement = stats["agreement"]
    assert agreement["sources"] == 24 and agreement["exact_match"] == round(sum(same) / 24, 4)
    assert agreement["mean_abs_score_diff"] == pytest.approx(sum(diffs) / 24, abs=1e-5)
    assert agreement["exact_match"] >= 0.7  # int8 weights: mostly the same beam output
    assert json.loads((tmp_path / "d" / "stats.json").read_text())["agreement"] == agreement
    line = next(r.getMessage() for r in caplog.records if "agreement with HF" in r.getMessage())
    assert f"{100 * agreement['exact_match']:.1f}% identical labels" in line
    assert any("CTranslate2 int8" in r.getMessage() for r in caplog.records)
    # New filters reassemble train.tsv without decoding again and keep the agreement.
    tokenizer_fp = tokenizer_fingerprint(tokenizer)
    cfg, _, _ = _engine(run_dir, tmp_path / "d", engine="ct2", ct2_quantization="int8", agreement_sources=24,
                        min_score=-5.0, **SETTINGS)

    def no_teacher():
        raise AssertionError("new filters must not decode again")

    fp = labels_fingerprint(sources, tokenizer_fp, teacher_fingerprint(run_dir / "teacher"), cfg)
    again = build_distilled(tmp_path / "d", sources, tokenizer, no_teacher, cfg, fp, reference=no_teacher)
    assert again["agreement"] == agreement


def test_a_resumed_ct2_corpus_is_byte_identical(run_dir, tmp_path):
    sources = toy_sentences(45, seed=13)
    options = dict(engine="ct2", ct2_quantization="int8", num_return_sequences=2, **SETTINGS)
    _build(run_dir, tmp_path / "whole", sources, **options)
    cut = tmp_path / "cut"
    _build(run_dir, cut, sources, **options)
    for name in ("shard-00001.tsv", "shard-00001.nbest.jsonl", "stats.json", "train.tsv", "nbest.jsonl"):
        (cut / name).unlink()  # as a run interrupted while translating shard 2 leaves it
    written = []
    _build(run_dir, cut, sources, on_shard=lambda done, total, info: written.append(done), **options)
    assert written == [2]
    assert _files(cut) == _files(tmp_path / "whole")


def test_labels_of_one_engine_are_never_completed_by_the_other(run_dir, tmp_path):
    sources = toy_sentences(20, seed=14)
    _build(run_dir, tmp_path / "hf", sources, engine="hf", **SETTINGS)
    _build(run_dir, tmp_path / "ct2", sources, engine="ct2", ct2_quantization="int8", agreement_sources=0,
           **SETTINGS)
    for out, other, needle in [
        ("hf", dict(engine="ct2", ct2_quantization="int8"), "seqkd.engine: 'hf' there, 'ct2' now"),
        ("ct2", dict(engine="hf"), "seqkd.engine: 'ct2' there, 'hf' now"),
        ("ct2", dict(engine="ct2", ct2_quantization="float32"), "seqkd.ct2_quantization: 'int8' there, 'float32' now"),
    ]:
        with pytest.raises(LabelsError) as err:
            _build(run_dir, tmp_path / out, sources, **other, **SETTINGS)
        assert needle in str(err.value) and "\n" not in str(err.value)
    # auto keeps the engine a corpus was begun with: HF labels stay HF labels, CT2 ones CT2 (and int8).
    assert _engine(run_dir, tmp_path / "hf", engine="auto")[0].engine == "hf"
    assert dataclasses.astuple(_engine(run_dir, tmp_path / "ct2", engine="auto", ct2_quantization="auto")[0]) == \
        dataclasses.astuple(SeqKDConfig(engine="ct2", ct2_quantization="int8"))
    assert _build(run_dir, tmp_path / "ct2", sources, engine="auto", agreement_sources=0, **SETTINGS)["sources"] == 20


def test_auto_picks_ct2_on_a_seq2seq_teacher_unless_sampling(run_dir, tmp_path):
    cfg, load, reference = _engine(run_dir, tmp_path / "new")
    quantization = "float16" if ct2_default_device() == "cuda" else "int8"
    assert (cfg.engine, cfg.ct2_quantization) == ("ct2", quantization)
    assert type(load()).__name__ == "Ct2Translator" and reference is not None
    assert (run_dir / f"teacher-ct2-{quantization}" / ".complete").is_file()
    cfg, load, reference = _engine(run_dir, tmp_path / "new", do_sample=True, num_beams=1)
    assert cfg.engine == "hf" and reference is None and type(load()).__name__ != "Ct2Translator"
    # A teacher that forces a first target token which is not its tokenizer's target-language code stays with HF
    # generate (CTranslate2 starts with that code; an NLLB teacher set up for the run's languages goes through it:
    # tests/models/test_languages.py).
    shutil.copytree(run_dir / "teacher", tmp_path / "forced" / "teacher")
    config = json.loads((tmp_path / "forced" / "teacher" / "config.json").read_text())
    (tmp_path / "forced" / "teacher" / "config.json").write_text(json.dumps({**config, "forced_bos_token_id": 5}))
    assert _engine(tmp_path / "forced", tmp_path / "forced" / "distilled")[0].engine == "hf"
    with pytest.raises(LabelsError, match="not its tokenizer's target-language code"):
        _engine(tmp_path / "forced", tmp_path / "forced" / "distilled", engine="ct2")


@pytest.mark.parametrize("override, needle", [
    ("seqkd.engine=vllm", "seqkd.engine: 'vllm' is not one of auto, hf, ct2"),
    ("seqkd.ct2_quantization=int4", "seqkd.ct2_quantization: 'int4' is not one of"),
    ("seqkd.agreement_sources=-1", "seqkd.agreement_sources"),
])
def test_bad_engine_settings_are_one_clear_error(override, needle):
    with pytest.raises(ConfigError) as err:
        load_config("quick", overrides=[override])
    assert needle in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="seqkd.engine: ct2 decodes with beam search only"):
        SeqKDConfig(engine="ct2", do_sample=True, num_beams=1)
    assert load_config("quick").seqkd.engine == "auto"
