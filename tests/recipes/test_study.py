"""`distilmt study` end to end on tiny models and real text: seven rows with the same budget, a rerun that trains
nothing, a sweep that retrains only the rows its key touches, and one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distilmt.cli import main
from distilmt.teachers.labels import read_distilled
from helpers import study_config

STUDY_ROWS = ["teacher", "student", "teacher-lora", "student-lora", "hard-label-kd", "soft-label-kd", "hard+soft-kd"]
MODEL_DIRS = STUDY_ROWS[1:]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILMT_CACHE", str(tmp_path / "cache"))


def _mtimes(run_dir: Path) -> dict[str, int]:
    files = [run_dir / d / "model.safetensors" for d in ("teacher", *MODEL_DIRS)]
    files += [run_dir / "hard-labels" / "stats.json", run_dir / "student-lora" / "adapter" / "adapter_model.safetensors"]
    return {str(f.relative_to(run_dir)): f.stat().st_mtime_ns for f in files}


def test_study_writes_seven_rows_then_a_rerun_and_a_sweep_reuse_finished_stages(tmp_path, capsys, verse_pairs):
    run_dir, config = tmp_path / "study", study_config(tmp_path, verse_pairs)
    assert main(["study", "--config", str(config), "--run-dir", str(run_dir)]) == 0
    study = json.loads((run_dir / "study.json").read_text())
    rows = {r["name"]: r for r in study["models"]}
    assert [r["name"] for r in study["models"]] == STUDY_ROWS
    for row in rows.values():
        for key in ("name", "bleu", "chrf", "params", "collapsed", "distinct_ratio", "size_mb"):
            assert key in row and row[key] is not None, (row["name"], key)
    # one architecture for the students, the teacher's for teacher-lora (a merged LoRA model is a plain model)
    assert rows["teacher-lora"]["params"] == rows["teacher"]["params"]
    assert len({rows[n]["params"] for n in MODEL_DIRS if n != "teacher-lora"}) == 1
    assert rows["student"]["params"] < rows["teacher"]["params"]
    assert {rows[n]["updates"] for n in MODEL_DIRS if n != "teacher-lora"} == {4}  # the same budget for each
    # hard labels: the LoRA teacher's translations of 24 of the students' 300 pairs, mixed with the references
    labels = read_distilled(run_dir / "hard-labels")
    assert len(labels) <= 24 and rows["hard-label-kd"]["train_pairs"] == 300 + len(labels)
    assert rows["student"]["train_pairs"] == rows["soft-label-kd"]["train_pairs"] == 300
    assert json.loads((run_dir / "hard-labels" / "manifest.json").read_text())["settings"]["num_beams"] == 2
    assert (run_dir / "student-lora" / "adapter" / "adapter_config.json").is_file()
    assert not (run_dir / "student" / "adapter").exists()
    for name in ("study.md", "report.md", "report.html", "translations.json"):
        assert (run_dir / name).is_file(), name
    assert "hard+soft-kd" in (run_dir / "study.md").read_text() and "hard+soft-kd" in capsys.readouterr().out
    translations = json.loads((run_dir / "translations.json").read_text())
    assert list(translations["hypotheses"]) == STUDY_ROWS

    # A rerun finds every stage complete: nothing is trained, generated or rewritten.
    before = _mtimes(run_dir)
    assert main(["study", "--config", str(config), "--run-dir", str(run_dir)]) == 0
    assert _mtimes(run_dir) == before
    assert [r["name"] for r in json.loads((run_dir / "study.json").read_text())["models"]] == STUDY_ROWS

    # A temperature sweep: T=2 is the study's own setting (all reused); T=1 retrains only the two soft-label rows.
    assert main(["study", "--run-dir", str(run_dir), "--sweep", "distill.temperature=2,1"]) == 0
    assert _mtimes(run_dir) == before
    assert sorted(p.name for p in (run_dir / "sweeps" / "distill.temperature" / "2").iterdir()
                  if (p / "config.json").is_file()) == []
    trained = sorted(p.name for p in (run_dir / "sweeps" / "distill.temperature" / "1").iterdir()
                     if (p / "config.json").is_file())
    assert trained == ["hard+soft-kd", "soft-label-kd"]
    summary = json.loads((run_dir / "sweep-distill.temperature.json").read_text())
    assert summary["values"] == [{"distill.temperature": "2"}, {"distill.temperature": "1"}]
    assert [[m["name"] for m in r["models"]] for r in summary["results"]] == [STUDY_ROWS, STUDY_ROWS]
    assert summary["results"][0]["models"][1]["bleu"] == summary["results"][1]["models"][1]["bleu"]  # student reused
    table = (run_dir / "sweep-distill.temperature.md").read_text()
    assert table.count("\n| ") == 3 and "soft-label-kd" in table  # header + two values
    assert (run_dir / "sweep-distill.temperature.png").stat().st_size > 1000


def test_study_refuses_what_it_cannot_compare(tmp_path, capsys):
    config = study_config(tmp_path)
    cases = [
        (["--sweep", "data.max_train_pairs=100,200"], "--sweep data.max_train_pairs: the study's data, teacher"),
        (["--sweep", "distill.temperature=2"], "give at least two different values"),
        (["--sweep", "lora.rank=2,4", "--sweep", "lora.alpha=4,8,16"], "need the same number of values"),
        (["--sweep", "lora.rank=2,0"], "--sweep lora.rank=0: lora.rank: 0 must be a whole number >= 1"),
        (["--rows", "student,tutor"], "study rows: 'tutor' unknown"),
        (["--set", "student_train.max_steps=0", "--set", "student_train.epochs=1"], "student_train.max_steps: the "
                                                                                    "study gives every student"),
    ]
    for i, (extra, message) in enumerate(cases):
        code = main(["study", "--config", str(config), "--run-dir", str(tmp_path / f"r{i}"), *extra])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.count("\n") == 0 and message in err, (extra, err)
