"""The main job end to end on tiny models and real text, stage skipping, bring-your-own, and user mistakes."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import SHARED_DATA
from distilmt.cli import main
from helpers import write_config


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILMT_CACHE", str(tmp_path / "cache"))


def test_run_end_to_end_then_every_stage_skips(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["run", "--config", str(write_config(tmp_path, eval__teacher_ct2=True)), "--run-dir", str(run_dir)]) == 0
    for name in ("config.yaml", "data/train.tsv", "tokenizer/tokenizer.json", "teacher/model.safetensors",
                 "student-baseline/config.json", "student-kd/config.json", "metrics.json", "report.md", "report.html"):
        assert (run_dir / name).exists(), name
    rows = {r["name"]: r for r in json.loads((run_dir / "metrics.json").read_text())["models"]}
    assert {"teacher", "student-baseline", "student-kd", "student-kd-ct2-int8"} <= set(rows)
    # eval.teacher_ct2: the teacher through CTranslate2 int8 too, converted where generate-labels would convert it
    assert rows["teacher-ct2-int8"]["engine"] == "ct2" and rows["teacher-ct2-int8"]["params"] == rows["teacher"]["params"]
    assert (run_dir / "teacher-ct2-int8" / ".complete").is_file()
    for row in rows.values():
        for key in ("bleu", "chrf", "params", "size_mb", "sentences_per_s", "collapsed"):
            assert key in row, key
    assert rows["student-kd"]["params"] < rows["teacher"]["params"]
    for model in ("teacher", "student-baseline", "student-kd"):  # a finished model directory ships as it is
        assert not (run_dir / model / "checkpoints").exists(), model
        assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= \
            {f.name for f in (run_dir / model).iterdir()}, model
    assert list((run_dir / "tb" / "student-kd").glob("events.out.tfevents.*"))
    report = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "## Sample translations" in report and "Monitor: one dev verse across training" in report
    assert "[monitor] epoch 1 summary" in (run_dir / "run.log").read_text(encoding="utf-8")
    table = capsys.readouterr().out
    assert "student-kd" in table and "BLEU" in table
    # KD against its twin with a paired bootstrap, in metrics.json, report.md and under the printed table
    kd_test = json.loads((run_dir / "metrics.json").read_text())["kd_vs_baseline"]
    assert kd_test["bleu"]["baseline"] == pytest.approx(rows["student-baseline"]["bleu"], abs=1e-3)
    assert kd_test["bleu"]["system"] == pytest.approx(rows["student-kd"]["bleu"], abs=1e-3)
    assert kd_test["bleu"]["ci95"][0] <= kd_test["bleu"]["ci95"][1] and 0 <= kd_test["bleu"]["system_better"] <= 1
    assert "KD vs its no-KD twin" in table and "KD vs its no-KD twin" in report

    # Every stage finds its output complete: nothing is retrained, files are untouched.
    before = (run_dir / "student-kd" / "model.safetensors").stat().st_mtime_ns
    assert main(["distill", "--run-dir", str(run_dir)]) == 0
    assert main(["train-teacher", "--run-dir", str(run_dir)]) == 0
    assert (run_dir / "student-kd" / "model.safetensors").stat().st_mtime_ns == before

    # compare: any model directories (HF and CTranslate2) on the run's test split, one row each.
    out = tmp_path / "cmp"
    assert main(["compare", f"teacher={run_dir / 'teacher'}", str(run_dir / "student-kd"),
                 str(run_dir / "export" / "student-kd-ct2-int8"), "--run-dir", str(run_dir), "--out", str(out),
                 "--max-sentences", "5", "--beams", "1"]) == 0
    compared = json.loads((out / "comparison.json").read_text())["models"]
    assert [r["name"] for r in compared] == ["teacher", "student-kd", "student-kd-ct2-int8"]
    assert compared[0]["speedup"] == pytest.approx(1.0) and compared[2]["engine"] == "ct2"
    for key in ("bleu", "chrf", "ter", "params", "size_mb", "latency_bs1_ms", "throughput_bs32", "speedup",
                "peak_mem_mb", "collapsed"):
        assert key in compared[1], key
    assert (out / "report.html").is_file() and (out / "comparison.csv").is_file()

    # translate reads stdin or --text with any model of the run.
    assert main(["translate", "teacher", "--run-dir", str(run_dir), "--text", "In the beginning", "--beams", "1"]) == 0
    assert capsys.readouterr().out.strip()


def test_hu_en_direction_and_a_different_config_is_refused(tmp_path, capsys):
    run_dir = tmp_path / "run"
    cfg = write_config(tmp_path)
    assert main(["prepare-data", "--config", str(cfg), "--direction", "hu-en", "--run-dir", str(run_dir)]) == 0
    first = (run_dir / "data" / "test.tsv").read_text(encoding="utf-8").splitlines()[0]
    from distilmt.data.bible import aligned_verses

    hu_sources = {v.hu for v in aligned_verses()[0]}
    assert first.split("\t")[0] in hu_sources
    # Asking the same run directory for other settings is one clear error, and nothing is overwritten.
    assert main(["prepare-data", "--config", str(cfg), "--direction", "en-hu", "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other settings" in err[0] and "source_lang" in err[0]
    assert (run_dir / "data" / "test.tsv").read_text(encoding="utf-8").splitlines()[0] == first


def test_set_on_an_existing_run_is_compared_with_its_saved_config(tmp_path, capsys):
    cfg = write_config(tmp_path, data__max_train_pairs=120)
    run_dir = tmp_path / "run"
    assert main(["prepare-data", "--config", str(cfg), "--run-dir", str(run_dir)]) == 0
    saved = (run_dir / "config.yaml").read_text(encoding="utf-8")
    # no --config: the run's own settings plus the one change, so the refusal names only that key
    assert main(["prepare-data", "--run-dir", str(run_dir), "--set", "distill.temperature=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "distill.temperature: 2.0 there, 3.0 now" in err, err
    assert main(["prepare-data", "--run-dir", str(run_dir), "--set", "data.max_train_pairs=120"]) == 0  # the same
    assert (run_dir / "config.yaml").read_text(encoding="utf-8") == saved
    # a stage that needs a run does not create one: nothing written, the right `run` afterwards is not refused
    fresh = tmp_path / "fresh"
    assert main(["distill", "--config", str(cfg), "--run-dir", str(fresh)]) == 2
    assert "no run here yet" in capsys.readouterr().err and not (fresh / "config.yaml").exists()
    assert main(["prepare-data", "--config", str(cfg), "--teacher", "/nope", "--run-dir", str(fresh)]) == 2
    assert "teacher.path /nope: no such directory" in capsys.readouterr().err
    assert not (fresh / "config.yaml").exists()
    assert main(["prepare-data", "--config", str(cfg), "--run-dir", str(fresh)]) == 0
    # --direction and a contradicting --set: refused, not silently one of them
    assert main(["prepare-data", "--config", str(cfg), "--direction", "hu-en", "--set", "data.source_lang=en",
                 "--run-dir", str(tmp_path / "third")]) == 2
    assert "data.source_lang: --direction says 'hu' but --set data.source_lang=en" in capsys.readouterr().err


def test_bring_your_own_corpus_and_teacher(tmp_path, tokenizer, tiny_teacher):
    tatoeba = SHARED_DATA / "tatoeba-en-hu" / "pairs.tsv"
    if not tatoeba.is_file():
        pytest.skip(f"{tatoeba} not found: the shared real corpora are not on this machine")
    teacher_dir = tmp_path / "my-teacher"
    tiny_teacher.save_pretrained(teacher_dir)
    tokenizer.save_pretrained(teacher_dir)
    run_dir = tmp_path / "run"
    cfg = write_config(tmp_path, data__max_train_pairs=300, data__dev_size=20, data__test_size=20)
    assert main(["run", "--config", str(cfg), "--corpus", str(tatoeba), "--teacher", str(teacher_dir),
                 "--set", "eval.export_ct2=false", "--set", "monitor.enabled=false", "--run-dir", str(run_dir)]) == 0
    stats = json.loads((run_dir / "data" / "stats.json").read_text())
    assert stats["train"] == 300 and stats["test"] == 20
    rows = {r["name"]: r for r in json.loads((run_dir / "metrics.json").read_text())["models"]}
    assert rows["teacher"]["params"] == tiny_teacher.num_parameters()


@pytest.mark.parametrize("args, needle", [
    (["--set", "distill.temperature=0"], "distill.temperature"),
    (["--set", "distill.alpha=abc"], "distill.alpha"),
    (["--set", "train.lr=1"], "train"),
    (["--set", "teacher.arch=lstm"], "teacher.arch"),
    (["--preset", "nope"], "preset 'nope'"),
    (["--corpus", "/nonexistent/corpus.tsv"], "corpus.tsv"),
    (["--teacher", "/nonexistent/teacher"], "/nonexistent/teacher"),
])
def test_user_mistakes_end_in_one_clear_line(tmp_path, capsys, args, needle):
    base = [] if "--preset" in args else ["--config", str(write_config(tmp_path))]
    code = main(["prepare-data", *base, *args, "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("distilmt: error:") and needle in err[0]


def test_teacher_with_another_vocabulary_is_refused(tmp_path, capsys, verse_pairs):
    from distilmt.config import TeacherConfig
    from distilmt.data.tokenizer import train_tokenizer
    from distilmt.models.build import build_model

    run_dir = tmp_path / "run"
    cfg = write_config(tmp_path)
    assert main(["prepare-data", "--config", str(cfg), "--run-dir", str(run_dir)]) == 0
    other_tok = train_tokenizer((t for p in verse_pairs[:300] for t in p), 250, tmp_path / "other")
    teacher = build_model(TeacherConfig(d_model=16, encoder_layers=1, decoder_layers=1, ffn_dim=32, heads=2), other_tok)
    teacher.save_pretrained(run_dir / "teacher")
    other_tok.save_pretrained(run_dir / "teacher")
    (run_dir / "teacher" / ".complete").write_text("{}")
    assert main(["distill", "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "vocabulary" in err[0] and "teacher" in err[0]
    assert not (run_dir / "student-kd").exists()


def test_distill_trains_student_kd_from_the_listed_teacher_ensemble(tmp_path, capsys):
    from conftest import TINY_TEACHER
    from distilmt.config import TeacherConfig
    from distilmt.models.build import build_model
    from distilmt.recipes import pipeline
    from distilmt.rundir import load_tokenizer
    from distilmt.teachers.ensemble import EnsembleTeacher

    run_dir, first, second = tmp_path / "run", tmp_path / "teacher-a", tmp_path / "teacher-b"
    assert main(["prepare-data", "--config", str(write_config(tmp_path)), "--set", "monitor.enabled=false",
                 "--set", f"distill.teachers=['{first}', '{second}']", "--set", "distill.teacher_weights=[1, 3]",
                 "--run-dir", str(run_dir)]) == 0
    tokenizer = load_tokenizer(run_dir)
    for directory, seed in ((run_dir / "teacher", 0), (first, 1), (second, 2)):
        build_model(TeacherConfig(**TINY_TEACHER), tokenizer, seed=seed).save_pretrained(directory)
        tokenizer.save_pretrained(directory)
    (run_dir / "teacher" / ".complete").write_text("{}")

    cfg = pipeline.open_run(run_dir)
    trainer = pipeline.distill(cfg, run_dir, ("student-kd",))["student-kd"]
    assert isinstance(trainer.teacher, EnsembleTeacher)
    assert len(trainer.teacher.teachers) == 2  # the listed teachers only: the run's own teacher is not added
    assert trainer.teacher.weights().tolist() == pytest.approx([0.25, 0.75])
    assert trainer.state.global_step == 4
    assert all(h["kd"] > 0 for h in trainer.state.log_history if "loss" in h)
    assert (run_dir / "student-kd" / ".complete").is_file()

    # A listed teacher with another vocabulary: one line naming its directory, before any student trains.
    other = tmp_path / "other-vocab"
    build_model(TeacherConfig(**TINY_TEACHER), tokenizer, seed=3).save_pretrained(other)
    tokenizer.add_tokens(["<only-here>"])
    tokenizer.save_pretrained(other)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["distill"]["teachers"] = [str(first), str(other)]
    config["distill"]["teacher_weights"] = None
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "student-kd" / ".complete").unlink()
    capsys.readouterr()
    assert main(["distill", "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(other) in err[0] and "vocabulary" in err[0]
    assert not (run_dir / "student-baseline" / ".complete").exists()


def test_the_monitor_watches_with_the_live_teachers_model_not_a_second_copy(tmp_path):
    from conftest import TINY_TEACHER
    from distilmt.config import TeacherConfig
    from distilmt.models.build import build_model
    from distilmt.monitor import DistillationMonitor
    from distilmt.recipes import pipeline
    from distilmt.rundir import load_tokenizer
    from distilmt.teachers.signal import LiveTeacher

    run_dir = tmp_path / "run"
    assert main(["prepare-data", "--config", str(write_config(tmp_path)), "--set", "distill.teacher_cache=false",
                 "--run-dir", str(run_dir)]) == 0
    tokenizer = load_tokenizer(run_dir)
    build_model(TeacherConfig(**TINY_TEACHER), tokenizer, seed=0).save_pretrained(run_dir / "teacher")
    tokenizer.save_pretrained(run_dir / "teacher")
    (run_dir / "teacher" / ".complete").write_text("{}")
    trainer = pipeline.distill(pipeline.open_run(run_dir), run_dir, ("student-kd",))["student-kd"]
    monitor = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, DistillationMonitor))
    assert isinstance(trainer.teacher, LiveTeacher) and monitor.teacher is trainer.teacher.model
    assert monitor.panels and monitor.history[0]["teacher"] == monitor.teacher_translations[0]
