"""Evaluation and checkpoints every N updates (train.eval_steps): where they happen, the best checkpoint, early
stopping counting evaluations, the auto rule, and a resume from a checkpoint inside an epoch."""

from __future__ import annotations

import copy
import io
import json

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file
from transformers import TrainerCallback

from distilmt.config import AUTO_EVAL_UPDATES, MonitorConfig, TrainConfig
from distilmt.data.batching import ParallelDataset, TokenBatchSampler
from distilmt.monitor import DistillationMonitor
from distilmt.training import loop
from distilmt.training.loop import last_checkpoint, train_seq2seq, training_arguments
from helpers import Interrupt


class Saves(TrainerCallback):
    """Records the step of every checkpoint written (save_total_limit removes old ones from the disk)."""

    def __init__(self):
        self.steps = []

    def on_save(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


class ScriptedBleu(TrainerCallback):
    """Dev BLEU by update as ``script`` says, in place of the real score: the test then knows which evaluation is
    the best. The evaluation itself still runs (generation on the dev set); only its score is scripted."""

    def __init__(self, script: dict[int, float]):
        self.script, self.step = script, 0

    def on_step_end(self, args, state, control, **kwargs):
        self.step = state.global_step

    def metric(self, tokenizer):
        return lambda eval_preds: {"bleu": self.script[self.step]}


def _cfg(**changes) -> TrainConfig:
    return TrainConfig(**{**dict(learning_rate=3e-3, warmup_steps=0, batch_tokens=200, bf16=False,
                                 label_smoothing=0.1), **changes})


def _evals(trainer) -> list[int]:
    return [entry["step"] for entry in trainer.state.log_history if "eval_bleu" in entry]


def test_evaluations_and_checkpoints_come_every_n_updates(tmp_path, tokenizer, tiny_teacher, verse_pairs, monkeypatch):
    bleu, saves = ScriptedBleu({2: 5.0, 4: 9.0, 6: 7.0, 7: 8.0}), Saves()
    monkeypatch.setattr(loop, "bleu_metric", bleu.metric)
    trainer = train_seq2seq(copy.deepcopy(tiny_teacher), tokenizer, verse_pairs[:160], verse_pairs[160:164],
                            _cfg(max_steps=7, eval_steps=2), tmp_path / "out", tmp_path / "tb", 0,
                            callbacks=[bleu, saves])
    assert trainer.args.eval_strategy == "steps" and trainer.args.save_strategy == "steps"
    assert _evals(trainer) == [2, 4, 6, 7] and saves.steps == [2, 4, 6, 7]  # and at the last update
    evaluations = [entry for entry in trainer.state.log_history if "eval_bleu" in entry]
    assert all(0 < entry["epoch"] < 1 for entry in evaluations)  # all inside the first epoch: not epoch ends
    checkpoints = tmp_path / "out" / "checkpoints"
    assert {p.name for p in checkpoints.iterdir()} == {"checkpoint-4", "checkpoint-7"}  # the best and the last
    state = json.loads((checkpoints / "checkpoint-4" / "trainer_state.json").read_text())
    assert [e["step"] for e in state["log_history"] if "eval_bleu" in e] == [2, 4]  # read back from the checkpoint
    assert state["best_model_checkpoint"] == str(checkpoints / "checkpoint-4")


def test_the_best_evaluation_is_the_model_kept_and_early_stopping_counts_evaluations(
        tmp_path, tokenizer, tiny_teacher, verse_pairs, monkeypatch):
    bleu = ScriptedBleu({2: 10.0, 4: 30.0, 6: 20.0, 8: 25.0, 10: 40.0, 12: 50.0})
    monkeypatch.setattr(loop, "bleu_metric", bleu.metric)
    cfg = _cfg(max_steps=12, eval_steps=2, early_stopping_patience=2)
    trainer = train_seq2seq(copy.deepcopy(tiny_teacher), tokenizer, verse_pairs[:160], verse_pairs[160:164], cfg,
                            tmp_path / "out", tmp_path / "tb", 0, callbacks=[bleu])
    # 6 and 8 bring no gain over 4: two evaluations without improvement stop the training at 8, not 12
    assert _evals(trainer) == [2, 4, 6, 8] and trainer.state.global_step == 8
    checkpoints = tmp_path / "out" / "checkpoints"
    assert trainer.state.best_metric == 30.0 and trainer.state.best_model_checkpoint == str(checkpoints / "checkpoint-4")
    saved, best = load_file(str(tmp_path / "out" / "model.safetensors")), load_file(str(checkpoints / "checkpoint-4" /
                                                                                          "model.safetensors"))
    last = load_file(str(checkpoints / "checkpoint-8" / "model.safetensors"))
    assert all(torch.equal(saved[k], best[k]) for k in best)  # the model saved is the best evaluation's
    assert not all(torch.equal(saved[k], last[k]) for k in best)


def test_a_run_resumed_inside_an_epoch_evaluates_and_stops_where_the_uninterrupted_one_does(
        tmp_path, tokenizer, tiny_teacher, verse_pairs, monkeypatch):
    bleu = ScriptedBleu({2: 10.0, 4: 30.0, 6: 20.0, 8: 25.0, 10: 40.0, 12: 50.0})
    monkeypatch.setattr(loop, "bleu_metric", bleu.metric)
    cfg = _cfg(max_steps=12, eval_steps=2, early_stopping_patience=2)
    train, dev = verse_pairs[:160], verse_pairs[160:164]
    with pytest.raises(KeyboardInterrupt):  # killed after the evaluation at 6, the first of the two without gain
        train_seq2seq(copy.deepcopy(tiny_teacher), tokenizer, train, dev, cfg, tmp_path / "out", tmp_path / "tb", 0,
                      callbacks=[bleu, Interrupt(at_step=7)])
    checkpoint = last_checkpoint(tmp_path / "out")
    assert checkpoint.name == "checkpoint-6"
    assert 0 < json.loads((checkpoint / "trainer_state.json").read_text())["epoch"] < 1
    saves = Saves()
    trainer = train_seq2seq(copy.deepcopy(tiny_teacher), tokenizer, train, dev, cfg, tmp_path / "out",
                            tmp_path / "tb", 0, callbacks=[bleu, saves], resume=True)
    # the next evaluation is at 8 (not 6 + 2 counted from the resume's own start), and it is the second without
    # gain: the patience counted before the kill carries over, so the training stops at 8 as the straight run does
    assert _evals(trainer) == [2, 4, 6, 8] and saves.steps == [8] and trainer.state.global_step == 8
    assert trainer.state.best_model_checkpoint == str(tmp_path / "out" / "checkpoints" / "checkpoint-4")


def test_the_monitor_keeps_its_epoch_summaries_when_evaluations_come_every_n_updates(tmp_path, tokenizer,
                                                                                      tiny_teacher, verse_pairs):
    train, dev = verse_pairs[:30], verse_pairs[160:162]
    cfg = _cfg()
    per_epoch = len(TokenBatchSampler(ParallelDataset(train, tokenizer, 0).lengths(), cfg.batch_tokens, cfg.seed))
    assert per_epoch >= 3  # so evaluations (every 2) and epoch ends (every per_epoch) fall on different updates
    stream = io.StringIO()
    monitor = DistillationMonitor(tiny_teacher, tokenizer, dev, MonitorConfig(sample_frequency=2, num_samples=1),
                                  console=Console(file=io.StringIO()), stream=stream)
    steps = 2 * per_epoch + 1
    trainer = train_seq2seq(copy.deepcopy(tiny_teacher), tokenizer, train, dev, _cfg(max_steps=steps, eval_steps=2),
                            tmp_path / "out", tmp_path / "tb", 0, callbacks=[monitor])
    assert _evals(trainer) == [*range(2, steps, 2), steps]
    assert [p["step"] for p in monitor.panels] == list(range(2, steps, 2))
    # one summary per epoch end (and the partial last epoch), each over that epoch's training losses only
    assert [s["step"] for s in monitor.epoch_summaries] == [per_epoch, 2 * per_epoch, steps]
    losses = [e for e in trainer.state.log_history if "loss" in e]
    first = [e["loss"] for e in losses if e["step"] <= per_epoch]
    assert monitor.epoch_summaries[0]["mean_loss"] == pytest.approx(sum(first) / len(first))
    assert monitor.final_summary is not None and monitor.final_summary["panels"] == len(monitor.panels)
    assert sum(line.startswith("[monitor] epoch ") for line in stream.getvalue().splitlines()) == 3


@pytest.mark.parametrize("eval_steps, updates_per_epoch, every", [
    ("auto", 439, 0),                          # the quick preset's epoch: evaluated at its end
    ("auto", AUTO_EVAL_UPDATES, 0),            # at the threshold: still per epoch
    ("auto", AUTO_EVAL_UPDATES + 1, AUTO_EVAL_UPDATES),
    ("auto", 60_000, AUTO_EVAL_UPDATES),       # a large corpus: every 2000 updates, 30 evaluations an epoch
    ("epoch", 60_000, 0),
    (500, 60_000, 500),
    (500, 100, 500),                           # a forced N larger than an epoch is still every N updates
])
def test_the_auto_rule_per_epoch_for_a_small_corpus_every_threshold_updates_for_a_large_one(
        eval_steps, updates_per_epoch, every):
    assert AUTO_EVAL_UPDATES == 2000
    assert TrainConfig(eval_steps=eval_steps).eval_interval(updates_per_epoch) == every


def test_the_trainer_arguments_follow_the_rule(tmp_path):
    small = training_arguments(_cfg(epochs=2), tmp_path, steps_per_epoch=1500)
    assert (small.eval_strategy, small.save_strategy, small.load_best_model_at_end) == ("epoch", "epoch", True)
    large = training_arguments(_cfg(epochs=2), tmp_path, steps_per_epoch=4500)
    assert (large.eval_strategy, large.eval_steps, large.save_strategy, large.save_steps) == ("steps", 2000, "steps",
                                                                                             2000)
    assert large.load_best_model_at_end and large.metric_for_best_model == "bleu"
    accumulated = training_arguments(_cfg(epochs=2, grad_accum=3), tmp_path, steps_per_epoch=4500)  # 1500 updates
    assert accumulated.eval_strategy == "epoch"
    quiet = training_arguments(_cfg(epochs=2, eval_every_epoch=False), tmp_path, steps_per_epoch=4500)
    assert (quiet.eval_strategy, quiet.save_strategy, quiet.save_steps, quiet.load_best_model_at_end) == (
        "no", "steps", 2000, False)  # no evaluation, checkpoints still every 2000 updates
    quiet_small = training_arguments(_cfg(epochs=2, eval_every_epoch=False), tmp_path, steps_per_epoch=300)
    assert (quiet_small.save_strategy, quiet_small.save_steps) == ("steps", 300)  # once an epoch, as before
