"""Every preset runs: the whole `distilmt run` of each presets/*.yaml, shrunk in size only, every method setting
(students, KD terms, mutual, progressive, on-policy, schedules, precision) exactly as the preset has it.

Only sizes are changed: the vocabulary, the corpus and evaluation slices, the teacher's width (its depth and head
count stay the preset's, so the student ratios derive the same layer and head counts), the updates, batch tokens
and the timed sentences. A preset whose methods cannot work together fails here, not on a user's machine.
"""

from __future__ import annotations

import json

import pytest
import yaml

from distilmt.cli import main
from distilmt.config import PRESET_DIR, PRESETS, load_config
from distilmt.data.batching import ParallelDataset
from distilmt.data.corpus import load_splits
from distilmt.recipes.stages import PROGRESSIVE_STUDENT, student_names
from distilmt.rundir import load_tokenizer
from distilmt.training import terms


@pytest.fixture(autouse=True, scope="module")
def _cache(tmp_path_factory):
    """One corpus cache for the module's runs (the built-in corpus is aligned once, not per preset)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DISTILMT_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def shrunk_preset(name: str, tmp_path) -> tuple:
    """The preset with tiny sizes (and nothing else changed), written to a YAML file: (path, values)."""
    values = yaml.safe_load((PRESET_DIR / f"{name}.yaml").read_text(encoding="utf-8"))
    teacher = values["teacher"]
    # 8 dimensions per head, the preset's 4x feed-forward; layers and heads as the preset has them
    teacher.update(d_model=8 * teacher["heads"], ffn_dim=32 * teacher["heads"])
    # data.max_tokens stays the preset's: with 300 subwords a verse is long, and a tighter cut would leave a handful
    values["data"].update(vocab_size=300, max_train_pairs=400, max_eval_sentences=8, max_test_sentences=12)
    for section, steps in (("teacher_train", 6), ("student_train", 4)):
        values[section].update(max_steps=steps, batch_tokens=400)
    values.setdefault("distill", {}).update(on_policy_max_new_tokens=16)
    values.setdefault("eval", {}).update(max_new_tokens=16, speed_sentences=4, speed_rounds=1, speed_min_seconds=0)
    values.setdefault("monitor", {}).update(sample_frequency=2, num_samples=1)
    path = tmp_path / f"{name}-shrunk.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path, values


TERMS = {"hidden": terms.HiddenTerm, "attention": terms.AttentionTerm, "mutual": terms.MutualTerm,
         "on_policy": terms.OnPolicyTerm}
"""The loss terms a preset may turn on, by what turns them on (distill.hidden_weight, attention_weight, mutual,
on_policy_ratio)."""


def _spy_on_terms(monkeypatch) -> set:
    """The names of TERMS computed during the run (each term's __call__ wrapped to record its name)."""
    called = set()
    for name, cls in TERMS.items():
        def wrapped(self, step, _name=name, _call=cls.__call__):
            called.add(_name)
            return _call(self, step)
        monkeypatch.setattr(cls, "__call__", wrapped)
    return called


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_runs_shrunk_end_to_end(preset, tmp_path, monkeypatch):
    path, _ = shrunk_preset(preset, tmp_path)
    cfg, original = load_config(file=path), load_config(preset)
    # the shrunk run is the preset's method: only sizes differ
    assert cfg.student == original.student and cfg.seqkd == original.seqkd and cfg.lora == original.lora
    for section in ("teacher_train", "student_train"):
        keep = {k: v for k, v in vars(getattr(cfg, section)).items() if k not in ("max_steps", "batch_tokens")}
        assert keep == {k: v for k, v in vars(getattr(original, section)).items() if k in keep}, section
    assert vars(cfg.distill) == {**vars(original.distill), "on_policy_max_new_tokens": 16}
    assert cfg.data.max_tokens == original.data.max_tokens
    assert (cfg.teacher.arch, cfg.teacher.encoder_layers, cfg.teacher.decoder_layers, cfg.teacher.heads) == \
        (original.teacher.arch, original.teacher.encoder_layers, original.teacher.decoder_layers,
         original.teacher.heads)

    run_dir = tmp_path / "run"
    called = _spy_on_terms(monkeypatch)
    assert main(["run", "--config", str(path), "--run-dir", str(run_dir)]) == 0
    kept = ParallelDataset(load_splits(run_dir / "data").train, load_tokenizer(run_dir), cfg.data.max_tokens)
    assert len(kept) >= 50  # the students learnt from a corpus, not from the few verses under a tight cut
    rows = {r["name"] for r in json.loads((run_dir / "metrics.json").read_text())["models"]}
    expected = {"teacher", *student_names(cfg)}
    if cfg.eval.export_ct2:
        expected.add("student-kd-ct2-int8")
    if cfg.distill.progressive_factor:
        expected.add(PROGRESSIVE_STUDENT)
    assert expected <= rows, sorted(expected - rows)
    assert (run_dir / "report.md").is_file() and (run_dir / "report.html").is_file()

    d = cfg.distill
    configured = {name for name, on in (("hidden", d.hidden_weight), ("attention", d.attention_weight),
                                        ("mutual", d.mutual), ("on_policy", d.on_policy_ratio)) if on}
    assert called == configured  # each term the preset turns on was computed, and no other
    if cfg.distill.mutual:
        assert (run_dir / "student-kd" / "peer" / "config.json").is_file()
    if cfg.distill.progressive_factor:
        stages = json.loads((run_dir / "progressive" / "chain.json").read_text())["stages"]
        assert stages[-1]["dir"] == str(run_dir / PROGRESSIVE_STUDENT)
