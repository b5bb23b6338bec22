"""``distilmt value``: the whole job once per student seed with one teacher, summarised in value.json / value.md."""

from __future__ import annotations

import json

from safetensors.torch import load_file

from distilmt.cli import main
from helpers import write_config


def test_value_runs_each_seed_on_one_teacher_and_writes_the_contract(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DISTILMT_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "value"
    cfg = write_config(tmp_path, eval__export_ct2=False, eval__speed_sentences=0, monitor__enabled=False,
                       student__init_from_teacher=False)  # the seed draws the students' initial weights
    assert main(["value", "--config", str(cfg), "--run-dir", str(run_dir), "--seeds", "1,2"]) == 0

    value = json.loads((run_dir / "value.json").read_text())
    assert [run["seed"] for run in value["runs"]] == [1, 2]
    for run in value["runs"]:
        rows = {row["name"]: row for row in run["models"]}
        assert {"teacher", "student-baseline", "student-kd"} <= set(rows)
        for row in rows.values():
            assert {"bleu", "params", "collapsed"} <= set(row)
        test = run["kd_vs_baseline"]["bleu"]
        assert test["system"] == rows["student-kd"]["bleu"] and test["baseline"] == rows["student-baseline"]["bleu"]
        assert 0 <= test["system_better"] <= 1
        assert json.loads((tmp_path / "value" / f"seed-{run['seed']}" / "metrics.json").read_text())["models"] \
            == run["models"]

    seeds = [run_dir / "seed-1", run_dir / "seed-2"]
    teachers = [load_file(d / "teacher" / "model.safetensors") for d in seeds]
    assert all((teachers[0][k] == teachers[1][k]).all() for k in teachers[0])  # one teacher for both seeds
    students = [load_file(d / "student-kd" / "model.safetensors") for d in seeds]
    assert any(not (students[0][k] == students[1][k]).all() for k in students[0])  # the seed changed the student
    assert value["runs"][0]["models"][0]["bleu"] == value["runs"][1]["models"][0]["bleu"]  # the teacher row

    table = (run_dir / "value.md").read_text()
    assert table.count("| student-kd |") == 2 and "seed 2: KD" in table and "paired bootstrap" in table
    assert "value.json" in capsys.readouterr().out
