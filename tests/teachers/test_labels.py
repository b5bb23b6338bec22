"""Sequence-level KD on tiny models and real text: the teacher's beam translations become the labels, written in
shards that survive an interruption, refused when stale, filtered with counts, and a student trains on them (alone
or mixed with the references) with no teacher in memory."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest
import yaml

from distilmt.cli import main
from distilmt.config import ConfigError, SeqKDConfig, TrainConfig, load_config
from distilmt.data.readers import normalize
from distilmt.data.tokenizer import tokenizer_fingerprint
from distilmt.errors import LabelsError
from distilmt.models.translators import HfTranslator
from distilmt.rundir import teacher_fingerprint
from distilmt.teachers.labels import build_distilled, filter_reason, labels_fingerprint, read_distilled, training_pairs
from helpers import TINY


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILMT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, tokenizer_dir, verse_pairs) -> Path:
    """A tiny teacher trained for a few hundred steps: varied, imperfect translations (real beam outputs)."""
    from transformers import AutoTokenizer

    from conftest import TINY_TEACHER
    from distilmt.config import TeacherConfig
    from distilmt.models.build import build_model
    from distilmt.training.loop import train_seq2seq

    quiet, level = logging.getLogger("transformers"), logging.getLogger("transformers").level
    quiet.setLevel(logging.ERROR)  # no max_length / max_new_tokens chatter from generate while it trains
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    model = build_model(TeacherConfig(**TINY_TEACHER), tokenizer, seed=0)
    work = tmp_path_factory.mktemp("seqkd-teacher")
    cfg = TrainConfig(max_steps=300, batch_tokens=1200, warmup_steps=10, learning_rate=5e-3, label_smoothing=0.0,
                      bf16=False, eval_every_epoch=False)
    train_seq2seq(model, tokenizer, verse_pairs[:600], [], cfg, work / "train", work / "tb", 24)
    quiet.setLevel(level)
    return work / "train"


@pytest.fixture()
def teacher(teacher_dir):
    from distilmt.models.loading import load_seq2seq

    return load_seq2seq(teacher_dir)[0]


def _build(out, sources, tokenizer, teacher, cfg, on_shard=None, load=None):
    fp = labels_fingerprint(sources, tokenizer_fingerprint(tokenizer), teacher_fingerprint(teacher), cfg)
    return build_distilled(out, sources, tokenizer, load or (lambda: teacher), cfg, fp, on_shard=on_shard)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != "stats.json"}


def test_labels_are_the_teachers_beam_translations_in_shards(tmp_path, tokenizer, teacher, verse_pairs):
    sources = [s for s, _ in verse_pairs[600:645]]  # held out from the teacher's training
    cfg = SeqKDConfig(num_beams=3, max_new_tokens=16, shard_size=20, batch_tokens=150)
    shards = []
    stats = _build(tmp_path / "d", sources, tokenizer, teacher, cfg, on_shard=lambda d, t, i: shards.append((d, t, i)))
    assert [(d, t) for d, t, _ in shards] == [(1, 3), (2, 3), (3, 3)]
    assert all(info["sentences_per_s"] > 0 for _, _, info in shards) and stats["sentences_per_s"] > 0
    rows = [line.split("\t") for i in range(3) for line in
            (tmp_path / "d" / f"shard-{i:05d}.tsv").read_text(encoding="utf-8").splitlines()]
    assert [len(r) for r in rows] == [3] * 45 and [r[0] for r in rows] == sources
    assert [len((tmp_path / "d" / f"shard-{i:05d}.tsv").read_text().splitlines()) for i in range(3)] == [20, 20, 5]
    # The labels are exactly what the translator the evaluation uses says with the same beam settings,
    # cleaned like every corpus line (spaces collapsed: an undertrained teacher may emit "  ").
    expected = [normalize(t) for t in
                HfTranslator(teacher, tokenizer).translate(sources, num_beams=3, max_new_tokens=16, batch_size=7)]
    assert [r[1] for r in rows] == expected
    assert len(set(expected)) > 10  # a real teacher's varied outputs, not one string for every input
    pairs = read_distilled(tmp_path / "d")
    assert stats["sources"] == 45 and stats["kept"] == len(pairs) == 45 - stats["filtered_total"]
    assert pairs == [(s, h) for s, h in zip(sources, expected) if h]
    scores = [float(r[2]) for r in rows]
    assert all(s <= 0 for s in scores) and stats["mean_score"] == pytest.approx(sum(scores) / 45, abs=1e-3)
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["settings"]["num_beams"] == 3 and set(manifest["fingerprint"]) == {
        "sources", "tokenizer", "teacher", "generation"}


@pytest.mark.parametrize("sampling", [False, True])
def test_an_interrupted_generation_resumes_to_the_same_files(tmp_path, tokenizer, teacher, verse_pairs, sampling):
    sources = [s for s, _ in verse_pairs[600:640]]
    options = dict(do_sample=True, top_p=0.9, temperature=1.3, num_beams=1) if sampling else dict(num_beams=3)
    cfg = SeqKDConfig(max_new_tokens=12, shard_size=12, batch_tokens=120, num_return_sequences=2, **options)
    whole = _build(tmp_path / "whole", sources, tokenizer, teacher, cfg)

    class Stop(Exception):
        pass

    def stop_after_two(done, total, info):
        if done == 2:
            raise Stop

    with pytest.raises(Stop):
        _build(tmp_path / "cut", sources, tokenizer, teacher, cfg, on_shard=stop_after_two)
    left = sorted(p.name for p in (tmp_path / "cut").iterdir())
    assert left == ["manifest.json", "shard-00000.nbest.jsonl", "shard-00000.tsv", "shard-00001.nbest.jsonl",
                    "shard-00001.tsv"]  # whole shards only, no temporary file, no train.tsv
    before = (tmp_path / "cut" / "shard-00000.tsv").stat().st_mtime_ns
    written = []
    resumed = _build(tmp_path / "cut", sources, tokenizer, teacher, cfg, on_shard=lambda d, t, i: written.append(d))
    assert written == [3, 4]  # only the missing shards were translated
    assert (tmp_path / "cut" / "shard-00000.tsv").stat().st_mtime_ns == before
    assert _files(tmp_path / "cut") == _files(tmp_path / "whole")
    assert resumed["kept"] == whole["kept"] and resumed["filtered"] == whole["filtered"]
    nbest = [json.loads(line) for line in (tmp_path / "whole" / "nbest.jsonl").read_text().splitlines()]
    assert [e["index"] for e in nbest] == list(range(40)) and all(len(e["hypotheses"]) == 2 for e in nbest)
    labels = dict(read_distilled(tmp_path / "whole"))
    assert all(labels.get(e["source"], e["hypotheses"][0]["text"]) == e["hypotheses"][0]["text"] for e in nbest)


def test_a_stale_corpus_is_refused_and_a_complete_one_is_not_regenerated(tmp_path, tokenizer, teacher, tiny_teacher,
                                                                       verse_pairs):
    sources = [s for s, _ in verse_pairs[:30]]
    cfg = SeqKDConfig(num_beams=2, max_new_tokens=10, shard_size=16)
    _build(tmp_path / "d", sources, tokenizer, teacher, cfg)

    def no_teacher():
        raise AssertionError("a complete corpus must not load the teacher")

    assert _build(tmp_path / "d", sources, tokenizer, teacher, cfg, load=no_teacher)["sources"] == 30
    for other, needle in [
        (dict(sources=sources[::-1]), "other training sources"),
        (dict(teacher=tiny_teacher), "another teacher"),
        (dict(cfg=dataclasses.replace(cfg, num_beams=4)), "seqkd.num_beams: 2 there, 4 now"),
    ]:
        args = {"sources": sources, "teacher": teacher, "cfg": cfg, **other}
        with pytest.raises(LabelsError) as err:
            _build(tmp_path / "d", args["sources"], tokenizer, args["teacher"], args["cfg"], load=no_teacher)
        assert needle in str(err.value) and "\n" not in str(err.value)


def test_filters_count_what_they_drop_and_only_reassemble(tmp_path, tokenizer, teacher, verse_pairs):
    sources = [s for s, _ in verse_pairs[600:660]]
    cfg = SeqKDConfig(num_beams=2, max_new_tokens=16, shard_size=25)
    _build(tmp_path / "d", sources, tokenizer, teacher, cfg)
    rows = [r.split("\t") for i in range(3) for r in (tmp_path / "d" / f"shard-{i:05d}.tsv").read_text().splitlines()]
    scores = sorted(float(r[2]) for r in rows)
    ratios = sorted(len(r[1].split()) / len(r[0].split()) for r in rows)
    strict = dataclasses.replace(cfg, min_score=scores[len(scores) // 2], min_length_ratio=ratios[10],
                                 max_length_ratio=ratios[-10])

    def no_teacher():
        raise AssertionError("new filters must not regenerate the translations")

    stats = _build(tmp_path / "d", sources, tokenizer, teacher, strict, load=no_teacher)
    expected = {"empty": 0, "length_ratio": 0, "score": 0, "repetition": 0}
    for source, label, score in rows:
        reason = filter_reason(source, label, float(score), strict)
        if reason:
            expected[reason] += 1
    assert stats["filtered"] == expected and expected["length_ratio"] > 0 and expected["score"] > 0
    assert stats["kept"] == 60 - sum(expected.values()) == len(read_distilled(tmp_path / "d"))
    kept = set(read_distilled(tmp_path / "d"))
    assert all(float(score) >= strict.min_score for source, label, score in rows if (source, label) in kept)
    assert filter_reason("a b", "", 0.0, cfg) == "empty"
    assert filter_reason("a b c d", "x", -0.1, dataclasses.replace(cfg, min_length_ratio=0.5)) == "length_ratio"
    assert filter_reason("a b", "x y", -2.0, dataclasses.replace(cfg, min_score=-1.0)) == "score"
    loops = dataclasses.replace(cfg, max_repetition=0.2)
    # 9 trigrams, 3 distinct ("the son of", "son of the", "of the son"): 1 - 3/9 = 0.67 repeated
    assert filter_reason("a b", "the son of the son of the son of the son", -0.1, loops) == "repetition"
    # 8 trigrams, 7 distinct: 0.125 is under 0.2, so the pair is kept, and every label is kept with the filter off
    assert filter_reason("a b", "the son of the son of Judah and of Israel", -0.1, loops) is None
    assert filter_reason("a b", "the son of the son of the son of the son", -0.1, cfg) is None
    assert filter_reason("a b", "so so", -0.1, loops) is None  # under three words: no trigram to repeat


def test_training_pairs_original_distilled_and_mix():
    original = [(f"s{i}", f"r{i}") for i in range(10)]
    distilled = [(f"s{i}", f"t{i}") for i in range(10) if i != 3]  # one pair filtered
    assert training_pairs(original, distilled, "original") == original
    assert training_pairs(original, distilled, "distilled") == distilled
    assert training_pairs(original, distilled, "mix", 1.0) == original + distilled  # both full sets
    half = training_pairs(original, distilled, "mix", 0.5, seed=3)
    assert half[:10] == original and len(half) == 10 + round(0.5 * 9)
    assert set(half[10:]) <= set(distilled) and half[10:] == sorted(half[10:], key=distilled.index)
    assert half == training_pairs(original, distilled, "mix", 0.5, seed=3)  # seeded


def _config(tmp_path: Path, **seqkd) -> Path:
    config = json.loads(json.dumps(TINY))
    config["data"].update(max_train_pairs=60, max_tokens=64)  # verses are long in a 300-token vocabulary
    config["eval"].update(export_ct2=False, speed_sentences=0)
    config["seqkd"] = {"enabled": True, "num_beams": 2, "max_new_tokens": 16, "shard_size": 25, **seqkd}
    path = tmp_path / "seqkd.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_cli_and_pipeline_train_a_student_on_the_teachers_labels_with_no_teacher(tmp_path, capsys):
    from distilmt.recipes import pipeline
    from distilmt.teachers.signal import LiveTeacher

    run_dir = tmp_path / "run"
    cfg_file = _config(tmp_path, train_on="mix", mix_ratio=0.5)
    assert main(["train-teacher", "--config", str(cfg_file), "--run-dir", str(run_dir)]) == 0
    assert main(["generate-labels", "--run-dir", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "pairs kept" in out and "sentences/s" in out
    assert sorted(p.name for p in (run_dir / "distilled").glob("shard-*.tsv")) == [
        "shard-00000.tsv", "shard-00001.tsv", "shard-00002.tsv"]
    assert "generate-labels: shard 3/3 written" in (run_dir / "run.log").read_text(encoding="utf-8")
    kept = json.loads((run_dir / "distilled" / "stats.json").read_text())["kept"]

    # A stale corpus (here: made by another teacher) is one line naming the fix; --rebuild makes it again.
    manifest = json.loads((run_dir / "distilled" / "manifest.json").read_text())
    manifest["fingerprint"]["teacher"] = "0" * 64
    (run_dir / "distilled" / "manifest.json").write_text(json.dumps(manifest))
    assert main(["generate-labels", "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another teacher" in err[0] and "--rebuild" in err[0]
    assert main(["generate-labels", "--run-dir", str(run_dir), "--rebuild"]) == 0

    cfg = pipeline.open_run(run_dir)
    assert pipeline.student_names(cfg) == ("student-baseline", "student-kd", "student-seqkd")
    trainer = pipeline.distill(cfg, run_dir, ("student-seqkd",))["student-seqkd"]
    assert trainer.teacher is None  # no teacher signal, no teacher model held
    assert trainer.state.global_step == 4 and len(trainer.train_dataset) > 0
    assert not any(isinstance(v, LiveTeacher) for v in vars(trainer).values())
    assert not [cb for cb in trainer.callback_handler.callbacks if type(cb).__name__ == "DistillationMonitor"]
    data = trainer.train_dataset
    assert len(data) + data.dropped == 60 + round(0.5 * kept)  # all references + half the distilled pairs
    assert (run_dir / "student-seqkd" / ".complete").is_file()

    # With token-level KD on top, the live teacher scores the distilled targets.
    with_kd = dataclasses.replace(cfg, seqkd=dataclasses.replace(cfg.seqkd, with_token_kd=True, train_on="distilled"))
    (run_dir / "student-seqkd" / ".complete").unlink()
    trainer = pipeline.distill(with_kd, run_dir, ("student-seqkd",))["student-seqkd"]
    assert isinstance(trainer.teacher, LiveTeacher) and trainer.distill is with_kd.distill
    assert trainer.state.global_step == 4
    assert len(trainer.train_dataset) + trainer.train_dataset.dropped == kept

    # evaluate lists the seq-KD student as its own row.
    assert main(["evaluate", "--run-dir", str(run_dir)]) == 0
    rows = {r["name"] for r in json.loads((run_dir / "metrics.json").read_text())["models"]}
    assert rows == {"teacher", "student-seqkd"}


def test_defaults_keep_todays_students(tmp_path):
    from distilmt.config import PRESETS
    from distilmt.recipes import pipeline

    for preset in PRESETS:
        cfg = load_config(preset)
        assert not cfg.seqkd.enabled and pipeline.student_names(cfg) == ("student-baseline", "student-kd")


@pytest.mark.parametrize("override, needle", [
    ("seqkd.train_on=both", "seqkd.train_on: 'both' is not one of original, distilled, mix"),
    ("seqkd.mix_ratio=0", "seqkd.mix_ratio"),
    ("seqkd.mix_ratio=1.5", "seqkd.mix_ratio"),
    ("seqkd.num_beams=0", "seqkd.num_beams"),
    ("seqkd.top_p=0.9", "seqkd.do_sample"),
    ("seqkd.temperature=0", "seqkd.temperature"),
    ("seqkd.num_return_sequences=8", "raise seqkd.num_beams to 8"),
    ("seqkd.min_score=0.5", "seqkd.min_score"),
    ("seqkd.min_length_ratio=-1", "seqkd.min_length_ratio"),
    ("seqkd.max_repetition=1", "seqkd.max_repetition: 1.0 must be in [0, 1)"),
    ("seqkd.max_repetition=-0.1", "seqkd.max_repetition"),
    ("seqkd.max_new_tokens=abc", "seqkd.max_new_tokens"),
    ("seqkd.colour=red", "seqkd.colour: unknown setting"),
])
def test_bad_seqkd_values_are_one_clear_error(tmp_path, capsys, override, needle):
    with pytest.raises(ConfigError) as err:
        load_config("quick", overrides=[override])
    assert str(err.value).startswith("seqkd.") and needle in str(err.value)
    assert load_config("quick", overrides=["seqkd.min_length_ratio=0.5", "seqkd.max_length_ratio=2",
                                           "seqkd.do_sample=true", "seqkd.top_p=0.9"]).seqkd.top_p == 0.9
    with pytest.raises(ConfigError, match="max_length_ratio"):
        SeqKDConfig(min_length_ratio=3, max_length_ratio=2)
    code = main(["generate-labels", "--preset", "quick", "--set", override, "--run-dir", str(tmp_path / "run")])
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err_lines) == 1 and needle in err_lines[0]
