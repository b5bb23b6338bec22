"""The training loop's promises: micro-batching equals the full batch, resume continues exactly, KD is wired."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from transformers import Seq2SeqTrainingArguments, TrainerCallback

from distilmt.config import DistillConfig, TrainConfig
from distilmt.data.batching import ParallelDataset, Seq2SeqCollator
from distilmt.teachers.signal import LiveTeacher
from distilmt.training.trainer import DistilTrainer, last_checkpoint, train_seq2seq


def _sgd_args(tmp_path, batch, accum):
    return Seq2SeqTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=batch, gradient_accumulation_steps=accum,
        max_steps=1, learning_rate=0.5, optim="sgd", lr_scheduler_type="constant", max_grad_norm=0.0,
        report_to="none", use_cpu=True, save_strategy="no", disable_tqdm=True, remove_unused_columns=False,
        seed=7, weight_decay=0.0,
    )


@pytest.mark.parametrize("with_teacher", [False, True])
def test_micro_batches_with_accumulation_equal_the_full_batch(tmp_path, tokenizer, tiny_teacher, verse_pairs,
                                                              with_teacher):
    # Sentences of very different lengths: a per-micro-batch mean would weight tokens unequally.
    data = ParallelDataset(verse_pairs[:4], tokenizer)
    assert len({len(e["labels"]) for e in data.examples}) > 1
    collator = Seq2SeqCollator(tokenizer.pad_token_id, tokenizer.eos_token_id)
    results = []
    for batch, accum in ((4, 1), (2, 2), (1, 4)):
        student = copy.deepcopy(tiny_teacher)
        torch.manual_seed(0)
        with torch.no_grad():
            for p in student.parameters():
                p.add_(0.01 * torch.randn_like(p))  # differ from the teacher so KD has a gradient
        student_init = copy.deepcopy(student)
        teacher = LiveTeacher(copy.deepcopy(tiny_teacher)) if with_teacher else None
        trainer = DistilTrainer(model=student, args=_sgd_args(tmp_path / f"{batch}", batch, accum), train_dataset=data,
                                data_collator=collator, teacher=teacher,
                                distill=DistillConfig(alpha=0.5, beta=0.5, temperature=2.0) if with_teacher else None,
                                label_smoothing=0.1)
        trainer.train()
        delta = torch.cat([(a - b).flatten() for a, b in zip(student.parameters(), student_init.parameters())])
        results.append(delta)
    assert results[0].abs().max() > 0
    torch.testing.assert_close(results[1], results[0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(results[2], results[0], rtol=1e-4, atol=1e-6)


class _Interrupt(TrainerCallback):
    def __init__(self, at_step):
        self.at_step = at_step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at_step:
            raise KeyboardInterrupt


def test_killed_training_resumes_from_last_checkpoint(tmp_path, tokenizer, tiny_teacher, verse_pairs):
    cfg = TrainConfig(learning_rate=3e-3, warmup_steps=2, max_steps=8, batch_tokens=200, bf16=False,
                      eval_every_epoch=False, label_smoothing=0.1)
    train, dev = verse_pairs[:160], verse_pairs[160:170]

    reference = copy.deepcopy(tiny_teacher)
    train_seq2seq(reference, tokenizer, train, dev, cfg, tmp_path / "straight", tmp_path / "tb1", 0, eval_steps=3)

    interrupted = copy.deepcopy(tiny_teacher)
    with pytest.raises(KeyboardInterrupt):
        train_seq2seq(interrupted, tokenizer, train, dev, cfg, tmp_path / "resumed", tmp_path / "tb2", 0,
                      eval_steps=3, callbacks=[_Interrupt(at_step=5)])
    ckpt = last_checkpoint(tmp_path / "resumed")
    assert ckpt is not None and ckpt.name == "checkpoint-3"

    resumed = copy.deepcopy(tiny_teacher)
    trainer = train_seq2seq(resumed, tokenizer, train, dev, cfg, tmp_path / "resumed", tmp_path / "tb2", 0,
                            eval_steps=3, resume=True)
    assert trainer.state.global_step == 8
    # Continuing from step 3 reproduces the uninterrupted run (same batches, same optimiser state).
    for (name, a), b in zip(reference.named_parameters(), resumed.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)


def test_kd_training_logs_ce_kd_and_writes_tensorboard(tmp_path, tokenizer, tiny_teacher, verse_pairs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    student = copy.deepcopy(tiny_teacher)
    cfg = TrainConfig(learning_rate=1e-3, warmup_steps=1, max_steps=4, batch_tokens=200, bf16=False)
    trainer = train_seq2seq(student, tokenizer, verse_pairs[:100], verse_pairs[100:110], cfg, tmp_path / "kd",
                            tmp_path / "tb", 0, teacher=LiveTeacher(tiny_teacher),
                            distill=DistillConfig(alpha=0.5, beta=0.5, temperature=2.0))
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert logged and all("ce" in h and "kd" in h for h in logged)
    assert any("eval_bleu" in h for h in trainer.state.log_history)
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/ce", "train/kd", "train/learning_rate", "eval/bleu"} <= tags
    assert (tmp_path / "kd" / "config.json").is_file() and (tmp_path / "kd" / "tokenizer.json").is_file()


@pytest.mark.parametrize("schedule, expected", [
    # 100 updates, 10 of warm-up, peak 1.0; lr after update 5, 10, 50, 80, 90, 100 (computed by hand)
    ("wsd", [0.5, 1.0, 1.0, 1.0, 0.5, 0.0]),          # stable until 80, linear decay over the last 20 % (decay_fraction 0.2)
    ("cosine", [0.5, 1.0, 0.5 * (1 + math.cos(math.pi * 40 / 90)), 0.5 * (1 + math.cos(math.pi * 70 / 90)),
                0.5 * (1 + math.cos(math.pi * 80 / 90)), 0.0]),
    ("linear", [0.5, 1.0, 50 / 90, 20 / 90, 10 / 90, 0.0]),
    ("constant", [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]),
])
def test_lr_schedules_as_the_trainer_builds_them(tmp_path, schedule, expected):
    from transformers import get_scheduler

    from distilmt.training.trainer import training_arguments

    cfg = TrainConfig(learning_rate=1.0, warmup_steps=10, max_steps=100, lr_schedule=schedule, decay_fraction=0.2,
                      eval_every_epoch=False, bf16=False)
    args = training_arguments(cfg, tmp_path, steps_per_epoch=50)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    # exactly Trainer.create_scheduler's call
    scheduler = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=args.get_warmup_steps(100),
                              num_training_steps=100, scheduler_specific_kwargs=args.lr_scheduler_kwargs)
    lrs = {}
    for step in range(1, 101):
        optimizer.step()
        scheduler.step()
        lrs[step] = scheduler.get_last_lr()[0]
    assert [lrs[s] for s in (5, 10, 50, 80, 90, 100)] == pytest.approx(expected, abs=1e-9)


def test_unknown_lr_schedule_is_refused():
    from distilmt.config import ConfigError

    with pytest.raises(ConfigError, match="train.lr_schedule.*cosine, wsd, linear, constant"):
        TrainConfig(lr_schedule="step")
    with pytest.raises(ConfigError, match="train.decay_fraction"):
        TrainConfig(lr_schedule="wsd", decay_fraction=0)
