"""Distillation methods in real (tiny) training runs: schedules, hidden-state and attention distillation.

Each test trains the conftest's tiny teacher family for a few steps on real verse pairs and checks what the
method promises: the scheduled values are the ones used and logged, the extra terms are finite and learned
from, the adapters are trained but never exported, and misconfigurations fail with one clear sentence.
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import Seq2SeqTrainingArguments

from distilmt.config import DistillConfig, StudentConfig
from distilmt.data.batching import ParallelDataset, Seq2SeqCollator
from distilmt.teachers import LiveTeacher
from distilmt.training import DistilTrainer, tensorboard_callback


def _args(tmp_path, steps=4, batch=8, accum=1, lr=3e-3, optim="adamw_torch", **extra):
    return Seq2SeqTrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=batch, gradient_accumulation_steps=accum,
        max_steps=steps, learning_rate=lr, optim=optim, lr_scheduler_type="constant", report_to="none",
        use_cpu=True, save_strategy="no", disable_tqdm=True, remove_unused_columns=False, seed=3,
        logging_steps=1, weight_decay=0.0, **extra)


def _trainer(tmp_path, tokenizer, pairs, student, teacher_model, distill, **args):
    data = ParallelDataset(pairs, tokenizer)
    collator = Seq2SeqCollator(tokenizer.pad_token_id, tokenizer.eos_token_id)
    return DistilTrainer(model=student, args=_args(tmp_path, **args), train_dataset=data, data_collator=collator,
                         teacher=LiveTeacher(teacher_model) if teacher_model is not None else None,
                         distill=distill, label_smoothing=0.1)


def test_schedules_move_temperature_and_weights_and_are_logged(tmp_path, tokenizer, tiny_teacher, verse_pairs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    distill = DistillConfig(alpha=0.1, beta=0.8, temperature=2.0, temperature_schedule="linear",
                            temperature_final=1.0, weight_schedule="linear", alpha_final=0.3, beta_final=0.6)
    trainer = _trainer(tmp_path, tokenizer, verse_pairs[:32], copy.deepcopy(tiny_teacher), tiny_teacher, distill)
    trainer.add_callback(tensorboard_callback(tmp_path / "tb"))
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    # Step k (0-based) trains at progress k / 4 and is logged after it: T 2 -> 1, alpha 0.1 -> 0.3, beta 0.8 -> 0.6.
    assert [h["temperature"] for h in logged] == pytest.approx([2.0, 1.75, 1.5, 1.25])
    assert [h["alpha"] for h in logged] == pytest.approx([0.1, 0.15, 0.2, 0.25])
    assert [h["beta"] for h in logged] == pytest.approx([0.8, 0.75, 0.7, 0.65])
    tags = set(EventAccumulator(str(tmp_path / "tb")).Reload().Tags()["scalars"])
    assert {"train/temperature", "train/alpha", "train/beta", "train/kd", "train/ce"} <= tags


def test_constant_settings_log_no_schedule(tmp_path, tokenizer, tiny_teacher, verse_pairs):
    trainer = _trainer(tmp_path, tokenizer, verse_pairs[:16], copy.deepcopy(tiny_teacher), tiny_teacher,
                       DistillConfig(), steps=2)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert logged and not any("temperature" in h or "alpha" in h for h in logged)
    assert trainer.scheduled_values() == {"temperature": 2.0, "alpha": 0.5, "beta": 0.5}


def test_kd_weight_rising_from_zero_still_runs_the_teacher(tmp_path, tokenizer, tiny_teacher, verse_pairs):
    distill = DistillConfig(alpha=0.0, beta=1.0, weight_schedule="cosine", alpha_final=1.0)
    trainer = _trainer(tmp_path, tokenizer, verse_pairs[:16], copy.deepcopy(tiny_teacher), tiny_teacher, distill,
                       steps=2)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["alpha"] for h in logged] == pytest.approx([0.0, 0.5])
    assert all("kd" in h for h in logged) and logged[-1]["kd"] >= 0
