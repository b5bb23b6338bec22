"""More than one test set in a comparison: one column group per set, per-set quality/health, speed once,
direction checks for run-directory models, and the real corpora in ../shared/data (skipped when absent)."""

from __future__ import annotations

import csv
import json
import shutil
from importlib.util import find_spec

import pytest

from conftest import SHARED_DATA
from distilmt.config import ConfigError, load_config, save_config
from distilmt.evaluation.compare import (
    evaluate_models,
    format_table,
    set_notes,
    to_markdown,
    write_csv,
    write_json,
    write_translations,
)
from distilmt.evaluation.metrics import quality
from distilmt.evaluation.report import write_report
from distilmt.evaluation.testsets import TestSet, load_test_set, model_direction, parse_spec, run_direction, run_split
from distilmt.models.translators import open_model
from helpers import make_tiny_model, toy_sentences

SPEED = {"repeats": 1, "warmup": 0, "min_seconds": 0, "latency_sentences": 2, "batch_sizes": [1, 32], "beam_batch_sizes": []}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny teacher that learnt some of a copy task (varied outputs) and a tiny student that did not
    (it prints nearly the same thing for every input)."""
    root = tmp_path_factory.mktemp("evalsets")
    return {"teacher": make_tiny_model(root / "teacher", "prenorm", d_model=32, layers=2, train_steps=40),
            "student": make_tiny_model(root / "student", "marian", d_model=16, layers=1, train_steps=15)}


def _write_tsv(path, pairs):
    path.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    return path


def _compare(models, test_sets, **kwargs):
    primary = toy_sentences(10, seed=4)
    entries = [("teacher", models["teacher"]), ("student", models["student"])]
    options = dict(num_beams=1, batch_size=4, max_new_tokens=10, speed_sentences=0, semantic=False)
    return evaluate_models(entries, primary, primary, "en", test_sets=test_sets, **(options | kwargs))


# ---------------------------------------------------------------- specs


def test_test_set_specs_and_their_mistakes():
    assert parse_spec("tatoeba=data/pairs.tsv") == ("tatoeba", "data/pairs.tsv", None, False)
    assert parse_spec("flickr=mt/test_2016_flickr@en-de") == ("flickr", "mt/test_2016_flickr", "en-de", False)
    assert parse_spec("t=pairs.tsv@en-hu:reverse") == ("t", "pairs.tsv", "en-hu", True)
    assert parse_spec("rev=@hu-en") == ("rev", "", "hu-en", False)
    assert parse_spec("odd=runs/a@b/test.tsv") == ("odd", "runs/a@b/test.tsv", None, False)  # an @ inside a path
    for bad, fragment in (("pairs.tsv", "write it as NAME=PATH"), ("x=", "write it as NAME=PATH"),
                          ("x=@en-en", "two different languages"), ("x=a.tsv@en-hu:rev", "is not ':reverse'"),
                          ("x=@en-hu:reverse", "e.g. @hu-en")):
        with pytest.raises(ConfigError, match=fragment):
            parse_spec(bad)
    with pytest.raises(ConfigError, match="needs --run-dir"):
        load_test_set("rev=@hu-en", "en-hu", run_dir=None)


# ---------------------------------------------------------------- a small TSV as a second set


def test_a_tsv_file_is_scored_in_its_own_column_group(models, tmp_path):
    pairs = [(s, s) for s in toy_sentences(8, seed=7)]  # the copy task the tiny models learnt a little of
    tsv = _write_tsv(tmp_path / "mine.tsv", pairs)
    mine = load_test_set(f"mine={tsv}", "en-de")
    assert (mine.sources, mine.references, mine.target_lang) == ([s for s, _ in pairs], [t for _, t in pairs], "de")
    swapped = [(s, " ".join(reversed(s.split()))) for s, _ in pairs]
    back = load_test_set(f"back={_write_tsv(tmp_path / 'back.tsv', swapped)}@en-de:reverse", "en-hu")
    assert list(zip(back.sources, back.references)) == [(t, s) for s, t in swapped] and back.direction == "de-en"

    result = _compare(models, [mine], speed_sentences=4, speed_settings=SPEED, isolate_speed=False)
    rows, hyps = result  # still unpacks as before
    assert hyps == result.hyps_by_set["test"]
    for row in rows:
        assert list(row["test_sets"]) == ["test", "mine"]
        primary, second = row["test_sets"]["test"], row["test_sets"]["mine"]
        assert (row["bleu"], row["chrf"], row["ter"]) == (primary["bleu"], primary["chrf"], primary["ter"])
        # the second set's own sentences were translated and scored against its own references
        translated = open_model(models[row["name"]]).translate(mine.sources, num_beams=1, batch_size=4,
                                                               max_new_tokens=10)
        assert result.hyps_by_set["mine"][row["name"]] == translated
        expected = quality(translated, mine.references, "de")
        assert (second["bleu"], second["chrf"], second["ter"]) == (expected["bleu"], expected["chrf"], expected["ter"])
        assert second["sentences"] == 8 and second["direction"] == "en-de" and second["unavailable"] is None
        # speed and size once per model, not per set
        assert row["throughput_bs32"] > 0 and row["latency_bs1_ms"] > 0 and row["params"] > 0
        assert not any(key.startswith(("throughput", "latency", "peak_mem", "params")) for key in second)
    teacher, student = rows
    assert teacher["test_sets"]["mine"]["chrf"] > 0  # the copy task was learnt a little
    for row in rows:  # retention on a set: BLEU over the reference model's BLEU on the same set (none if 0)
        ref_bleu = teacher["test_sets"]["mine"]["bleu"]
        expected = row["test_sets"]["mine"]["bleu"] / ref_bleu if ref_bleu else None
        assert row["test_sets"]["mine"]["retention"] == pytest.approx(expected)

    markdown = to_markdown(rows)
    header = [h.strip() for h in markdown.splitlines()[0].strip("|").split("|")]
    assert header[:4] == ["model", "engine", "test BLEU", "test chrF"] and "mine BLEU" in header
    assert header.count("params") == 1 and header.count("sent/s bs32") == 1
    teacher_cells = [c.strip() for c in markdown.splitlines()[2].strip("|").split("|")]
    assert teacher_cells[header.index("mine BLEU")] == f"{teacher['test_sets']['mine']['bleu']:.2f}"
    assert any(str(c.header) == "mine\nBLEU" for c in format_table(rows).columns)

    write_csv(rows, tmp_path / "c.csv")
    with open(tmp_path / "c.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert "test_sets" not in table[0] and "test/bleu" not in table[0]
    assert float(table[0]["mine/bleu"]) == teacher["test_sets"]["mine"]["bleu"]
    write_json(rows, tmp_path / "c.json", test_sets=result.set_info())
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["models"][0]["test_sets"]["mine"]["bleu"] == teacher["test_sets"]["mine"]["bleu"]
    assert [(s["name"], s["sentences"]) for s in data["test_sets"]] == [("test", 10), ("mine", 8)]
    write_translations(result, tmp_path / "t.json")
    saved = json.loads((tmp_path / "t.json").read_text())
    assert saved["hypotheses"] == hyps and saved["test_sets"]["mine"]["references"] == mine.references


def test_a_model_collapsed_on_any_set_is_flagged(models, tmp_path):
    same = TestSet("same", ["the red house"] * 6, ["the red house"] * 6, "en")  # one input: one output
    rows, _ = _compare(models, [same])
    teacher = rows[0]
    assert teacher["test_sets"]["test"]["collapsed"] is False  # varied outputs on varied inputs
    assert teacher["test_sets"]["same"]["collapsed"] is True and teacher["test_sets"]["same"]["distinct_ratio"] < 0.3
    assert teacher["collapsed"] is True and teacher["distinct_ratio"] == teacher["test_sets"]["test"]["distinct_ratio"]
    assert "teacher collapsed on same" in set_notes(rows)
    assert to_markdown(rows).splitlines()[2].startswith("| **teacher** |")

    (tmp_path / "metrics.json").write_text(json.dumps({"models": rows}))
    md = write_report(tmp_path).read_text()
    assert "collapsed model(s): teacher (on same)" in md and "## Results on 2 test sets: test, same" in md
    page = (tmp_path / "report.html").read_text()
    assert "<th colspan='7'>test</th><th colspan='7'>same</th>" in page  # the set's name over its columns


# ---------------------------------------------------------------- directions and run directories


def _make_run(tmp_path, models, direction="en-hu", name="run"):
    """A run directory: config.yaml, data/ prepared from a small TSV, and the tiny models as trained stages."""
    from distilmt.data.corpus import prepare_data

    words = toy_sentences(40, seed=11)
    corpus = _write_tsv(tmp_path / "corpus.tsv", [(s, " ".join(reversed(s.split()))) for s in words])
    src, tgt = direction.split("-")
    cfg = load_config("quick", overrides=[
        f"data.corpus={corpus}", f"data.source_lang={src}", f"data.target_lang={tgt}", "data.dev_size=4",
        "data.test_size=6", "eval.speed_sentences=0", "eval.export_ct2=false", "eval.semantic=false",
        "eval.num_beams=1", "eval.max_new_tokens=10"])
    run = tmp_path / name
    run.mkdir()
    save_config(cfg, run / "config.yaml")
    splits = prepare_data(cfg.data, run / "data")
    for stage, model in (("teacher", "teacher"), ("student-kd", "student")):
        shutil.copytree(models[model], run / stage)
        (run / stage / ".complete").write_text("{}")
    return run, splits


def test_the_run_split_reads_both_ways_and_models_know_their_direction(models, tmp_path):
    run, splits = _make_run(tmp_path, models)
    assert run_direction(run) == "en-hu" and run_direction(tmp_path) is None
    forward, backward = run_split(run, "en-hu"), run_split(run, "hu-en", "rev")
    assert list(zip(forward.sources, forward.references)) == splits.test
    assert list(zip(backward.sources, backward.references)) == [(t, s) for s, t in splits.test]
    assert backward.target_lang == "en" and backward.name == "rev"
    with pytest.raises(ConfigError, match="use @en-hu or @hu-en"):
        run_split(run, "en-de")
    assert model_direction(run / "student-kd") == "en-hu" and model_direction(models["student"]) is None
    if find_spec("ctranslate2"):
        from distilmt.export import export_ctranslate2

        exported = export_ctranslate2(run / "student-kd", tmp_path / "elsewhere" / "ct2")
        assert model_direction(exported) == "en-hu"  # through the source recorded at export


def test_evaluate_scores_extra_sets_and_says_why_a_model_cannot_translate_one(models, tmp_path, capsys):
    from distilmt.cli import main

    run, splits = _make_run(tmp_path, models)
    mine = _write_tsv(tmp_path / "mine.tsv", [(s, s) for s in toy_sentences(5, seed=3)])
    assert main(["evaluate", "--run-dir", str(run), "--test-set", "rev=@hu-en", "--test-set", f"mine={mine}"]) == 0
    data = json.loads((run / "metrics.json").read_text())
    assert [(s["name"], s["direction"], s["sentences"]) for s in data["test_sets"]] == [
        ("test", "en-hu", len(splits.test)), ("rev", "hu-en", len(splits.test)), ("mine", "en-hu", 5)]
    for row in data["models"]:
        rev = row["test_sets"]["rev"]
        assert rev["bleu"] is None and "trained for en-hu, cannot translate hu-en" in rev["unavailable"]
        assert row["test_sets"]["mine"]["unavailable"] is None and row["test_sets"]["mine"]["bleu"] is not None
        assert row["bleu"] == row["test_sets"]["test"]["bleu"] is not None
    md = (run / "report.md").read_text()
    assert "teacher not scored on rev: trained for en-hu" in md and "| rev BLEU |" in md
    translations = json.loads((run / "translations.json").read_text())
    assert translations["test_sets"]["rev"]["hypotheses"] == {}
    assert set(translations["test_sets"]["mine"]["hypotheses"]) == {"teacher", "student-kd"}
    assert main(["evaluate", "--run-dir", str(run), "--test-set", "x=@en-de"]) == 2
    assert "the test split of" in capsys.readouterr().err


def test_two_runs_of_opposite_directions_get_one_column_group_each(models, tmp_path):
    from distilmt.cli import main

    forward, _ = _make_run(tmp_path, models, "en-hu", "forward")
    backward, _ = _make_run(tmp_path, models, "hu-en", "backward")
    out = tmp_path / "both"
    assert main(["compare", f"en-hu={forward / 'teacher'}", f"hu-en={backward / 'teacher'}", "--run-dir",
                 str(forward), "--test-set", "hu-en=@hu-en", "--out", str(out), "--beams", "1",
                 "--speed-sentences", "0"]) == 0
    rows = {row["name"]: row for row in json.loads((out / "comparison.json").read_text())["models"]}
    for model, other in (("en-hu", "hu-en"), ("hu-en", "en-hu")):
        scored = "test" if model == "en-hu" else "hu-en"  # the primary set is the forward run's en-hu split
        refused = "hu-en" if model == "en-hu" else "test"
        assert rows[model]["test_sets"][scored]["chrf"] is not None
        assert rows[model]["test_sets"][scored]["unavailable"] is None
        assert f"trained for {model}, cannot translate {other}" in rows[model]["test_sets"][refused]["unavailable"]
    assert rows["hu-en"]["bleu"] is None  # the primary set's keys stay, empty for a model that cannot do it


# ---------------------------------------------------------------- real corpora


@pytest.mark.skipif(not (SHARED_DATA / "multi30k").is_dir() or not (SHARED_DATA / "tatoeba-en-hu").is_dir(),
                    reason=f"real corpora not found in {SHARED_DATA}")
def test_compare_on_tatoeba_and_multi30k_one_column_group_each(models, tmp_path):
    from distilmt.cli import main
    from distilmt.data.readers import normalize

    out = tmp_path / "out"
    flickr = SHARED_DATA / "multi30k" / "test_2016_flickr"
    assert main(["compare", f"teacher={models['teacher']}", f"student={models['student']}", "--out", str(out),
                 "--test", str(SHARED_DATA / "tatoeba-en-hu" / "pairs.tsv"), "--direction", "en-hu",
                 "--test-set", f"flickr={flickr}@en-de", "--max-sentences", "12", "--speed-sentences", "0",
                 "--beams", "1"]) == 0
    data = json.loads((out / "comparison.json").read_text())
    assert [(s["name"], s["direction"], s["sentences"]) for s in data["test_sets"]] == [
        ("test", "en-hu", 12), ("flickr", "en-de", 12)]
    translations = json.loads((out / "translations.json").read_text())
    german = [normalize(line) for line in flickr.with_suffix(".de").read_text(encoding="utf-8").splitlines()[:12]]
    assert translations["test_sets"]["flickr"]["references"] == german
    for row in data["models"]:
        for key in ("name", "bleu", "chrf", "ter", "params", "size_mb", "latency_bs1_ms", "throughput_bs32",
                    "speedup", "peak_mem_mb", "collapsed"):
            assert key in row, key  # the contract other tools rely on
        scored = row["test_sets"]["flickr"]
        expected = quality(translations["test_sets"]["flickr"]["hypotheses"][row["name"]], german, "de")
        assert (scored["bleu"], scored["chrf"], scored["ter"]) == (expected["bleu"], expected["chrf"], expected["ter"])
        assert row["collapsed"] == any(s["collapsed"] for s in row["test_sets"].values())
    assert "| flickr BLEU |" in (out / "comparison.md").read_text()
    with open(out / "comparison.csv", newline="") as f:
        assert "flickr/chrf" in next(csv.reader(f))
