"""`distilmt methods`: the comparison end to end on tiny models and real text, its resume, and its arithmetic."""

from __future__ import annotations

import json

import pytest
import torch

from distilmt.cli import main
from distilmt.config import PRESETS, ConfigError, load_config
from distilmt.config.run import parse_seeds
from distilmt.recipes.methods import (
    METHODS,
    active_methods,
    add_deltas,
    method_config,
    parse_methods,
    summary,
    to_markdown,
)
from helpers import write_config


@pytest.fixture(autouse=True, scope="module")
def _cache(tmp_path_factory):
    """One corpus cache for the module's runs (the built-in corpus is aligned once, not per test)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DISTILMT_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def test_every_method_is_a_valid_config_and_names_are_checked(tmp_path):
    base = load_config("quick")
    for method in METHODS:
        cfg = method_config(base, method, seed=7, run_dir=tmp_path)
        assert cfg.student_train.seed == 7 and cfg.teacher == base.teacher
        # quick reads the teacher cache; a method the cache cannot serve learns from the live teacher
        assert cfg.distill.teacher_cache == (method in ("baseline", "kd", "kd_constant", "jsd", "skew_kl", "tvd",
                                                        "temp_schedule", "weight_schedule", "mutual")), method
    assert method_config(base, "ensemble", 1, tmp_path).distill.teachers == [f"{tmp_path}/teacher",
                                                                             f"{tmp_path}/teacher-2"]
    assert method_config(base, "progressive", 1, tmp_path).distill.progressive_factor == 0.7
    assert parse_methods("kd, baseline,kd,jsd") == ["kd", "jsd"]
    assert parse_seeds("2,1,2") == [2, 1]
    with pytest.raises(ConfigError, match="--methods: 'dark_knowledge' is not a method"):
        parse_methods("kd,dark_knowledge")
    with pytest.raises(ConfigError, match="--seeds"):
        parse_seeds("one")


def test_deltas_and_summary_by_hand():
    rows = [dict(name="baseline-s1", method="baseline", seed=1, bleu=4.0, chrf=20.0, collapsed=False),
            dict(name="baseline-s2", method="baseline", seed=2, bleu=5.0, chrf=22.0, collapsed=False),
            dict(name="kd-s1", method="kd", seed=1, bleu=4.5, chrf=21.0, collapsed=False),
            dict(name="kd-s2", method="kd", seed=2, bleu=4.0, chrf=23.0, collapsed=True)]
    add_deltas(rows)
    assert [r["delta_bleu"] for r in rows] == [0.0, 0.0, 0.5, -1.0]
    assert [r["delta_chrf"] for r in rows] == [0.0, 0.0, 1.0, 1.0]
    base, kd = summary(rows)
    assert (base["bleu"], kd["bleu"], kd["chrf"]) == (4.5, 4.25, 22.0)
    assert kd["delta_bleu"] == pytest.approx(-0.25) and kd["delta_chrf"] == pytest.approx(1.0)
    assert kd["bleu_by_seed"] == {1: 4.5, 2: 4.0} and kd["collapsed"] == 1
    md = to_markdown(rows, {"bleu": 9.0, "chrf": 30.0}, {"test_sentences": 5, "num_beams": 1, "student_updates": 3})
    assert "| kd | 4.25 | s1: 4.50, s2: 4.00 | -0.25 | 22.00 | +1.00 | 1/2 |" in md and "Teacher: BLEU 9.00" in md


def test_every_method_family_is_selectable_from_a_preset():
    found = " | ".join(active_methods(load_config(name).distill) for name in PRESETS)
    for family in ("jsd", "T ", "alpha ", "hidden", "attention", "on-policy", "mutual", "progressive"):
        assert family in found, family
    # quick: forward KL at fixed weights (alpha 0.5, beta 0.5, no schedule); quick's teacher annealing of before
    # issue 16 (make study's and make methods' OLD_QUICK_STUDENT) is named
    assert active_methods(load_config("quick").distill) == "forward KL"
    annealed = load_config("quick", overrides=["distill.weight_schedule=linear", "distill.alpha=1", "distill.beta=0",
                                               "distill.alpha_final=0", "distill.beta_final=1"])
    assert active_methods(annealed.distill) == "alpha 1->0 linear"


def test_methods_command_end_to_end_then_resumes_without_redoing_rows(tmp_path, capsys):
    run_dir = tmp_path / "study"
    args = ["methods", "--config", str(write_config(tmp_path, student__depth_ratio=0.5)), "--run-dir", str(run_dir),
            "--methods", "kd,progressive", "--seeds", "1,2", "--steps", "3", "--test-sentences", "10"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Distillation methods" in out and "progressive" in out
    data = json.loads((run_dir / "methods.json").read_text())
    rows = {r["name"]: r for r in data["models"]}
    assert list(rows) == ["baseline-s1", "kd-s1", "progressive-s1", "baseline-s2", "kd-s2", "progressive-s2"]
    for name, row in rows.items():
        for key in ("name", "method", "seed", "bleu", "chrf", "collapsed", "delta_bleu", "train_seconds"):
            assert key in row, (name, key)
        assert 0 <= row["bleu"] <= 100 and isinstance(row["collapsed"], bool)
        assert row["delta_bleu"] == pytest.approx(row["bleu"] - rows[f"baseline-s{row['seed']}"]["bleu"])
        assert not (run_dir / "methods" / name / "checkpoints").exists()
    assert rows["baseline-s1"]["method"] == "baseline" and rows["kd-s2"]["seed"] == 2
    assert rows["kd-s1"]["updates"] == 3 and rows["progressive-s1"]["updates"] == 3  # 2+2 -> 1+1: one stage
    assert data["settings"]["test_sentences"] == 10 and data["teacher"]["bleu"] >= 0
    table = [line for line in (run_dir / "methods.md").read_text().splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0] for line in table] == ["| method", "| baseline", "| kd", "| progressive"]
    assert (run_dir / "methods.png").read_bytes()[:4] == b"\x89PNG"

    # Rerun: every row is found, nothing is trained or rewritten.
    stamps = {n: (run_dir / "methods" / n / "model.safetensors").stat().st_mtime_ns for n in rows}
    assert main(args) == 0
    again = {r["name"]: r for r in json.loads((run_dir / "methods.json").read_text())["models"]}
    assert again == rows
    assert stamps == {n: (run_dir / "methods" / n / "model.safetensors").stat().st_mtime_ns for n in rows}

    # An interrupted study (kd-s2 never written, its student gone): only that row is trained again.
    data["models"] = [r for r in data["models"] if r["name"] != "kd-s2"]
    (run_dir / "methods.json").write_text(json.dumps(data))
    import shutil

    shutil.rmtree(run_dir / "methods" / "kd-s2")
    assert main(args[:1] + ["--run-dir", str(run_dir), *args[5:]]) == 0  # the study's saved settings
    final = {r["name"]: r for r in json.loads((run_dir / "methods.json").read_text())["models"]}
    assert set(final) == set(rows) and (run_dir / "methods" / "kd-s2" / ".complete").is_file()
    assert {n: r for n, r in final.items() if n != "kd-s2"} == {n: r for n, r in rows.items() if n != "kd-s2"}
    assert all(stamps[n] == (run_dir / "methods" / n / "model.safetensors").stat().st_mtime_ns
               for n in rows if n != "kd-s2")


def test_unknown_method_is_one_line(tmp_path, capsys):
    assert main(["methods", "--config", str(write_config(tmp_path)), "--run-dir", str(tmp_path / "s"),
                 "--methods", "kd,magic"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "magic" in err[0] and "reverse_kl" in err[0]


def test_one_config_gives_the_same_student_through_distill_and_a_one_row_methods_run(tmp_path):
    """`distilmt distill` and `distilmt methods` train a student through the same train_student: with one config
    (here a teacher cache, which methods used to ignore) they give the same weights, and both build the cache."""
    from safetensors.torch import load_file

    config = write_config(tmp_path, distill__teacher_cache=True, eval__speed_sentences=0, eval__export_ct2=False,
                          eval__semantic=False, monitor__enabled=False, student_train__eval_every_epoch=False)
    base, via_distill, via_methods = tmp_path / "base", tmp_path / "distill", tmp_path / "methods"
    assert main(["train-teacher", "--config", str(config), "--run-dir", str(base)]) == 0
    teacher = ["--teacher", str(base / "teacher")]  # one teacher and tokenizer for both runs
    assert main(["train-teacher", "--config", str(config), *teacher, "--run-dir", str(via_distill)]) == 0
    assert main(["distill", "--config", str(config), *teacher, "--run-dir", str(via_distill), "--only", "kd"]) == 0
    assert main(["methods", "--config", str(config), *teacher, "--run-dir", str(via_methods), "--methods", "kd",
                 "--seeds", "1", "--test-sentences", "4"]) == 0
    teachers = [load_file(run / "teacher" / "model.safetensors") for run in (via_distill, via_methods)]
    assert teachers[0].keys() == teachers[1].keys()
    assert all(torch.equal(teachers[0][k], teachers[1][k]) for k in teachers[0])
    for run in (via_distill, via_methods):
        assert (run / "teacher-cache" / "stats.json").is_file()  # the KD signal came from the cache in both
    a = load_file(via_distill / "student-kd" / "model.safetensors")
    b = load_file(via_methods / "methods" / "kd-s1" / "model.safetensors")
    assert a.keys() == b.keys() and len(a) > 10
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:3]
