"""Trainer callbacks and metrics: one readable log line per step, TensorBoard, dev BLEU from real generation."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback
from transformers.integrations import TensorBoardCallback

from ..errors import TrainingDiverged
from .trainer import DistilTrainer, dev_scores

log = logging.getLogger("distilmt.training.trainer")


def bleu_metric(tokenizer):
    """compute_metrics for the Trainer: corpus BLEU and chrF of generated dev translations (sacrebleu,
    :func:`~distilmt.training.trainer.dev_scores`; a causal student's are scored by ``DistilTrainer.evaluate``)."""
    def compute(eval_pred):
        preds, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(preds, tuple):
            preds = preds[0]
        preds = np.where(preds < 0, tokenizer.pad_token_id, preds)
        labels = np.where(labels < 0, tokenizer.pad_token_id, labels)
        hyps = [h.strip() for h in tokenizer.batch_decode(preds, skip_special_tokens=True)]
        refs = [r.strip() for r in tokenizer.batch_decode(labels, skip_special_tokens=True)]
        return dev_scores(hyps, refs)

    return compute


class LogLines(TrainerCallback):
    """One readable log line per logging step and per evaluation (replaces the Trainer's dict printing)."""

    def __init__(self, name: str):
        self.name = name

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        where = f"{self.name} step {state.global_step}/{state.max_steps} ep {state.epoch or 0:.2f}"
        if "loss" in logs:
            parts = [f"loss {logs['loss']:.3f}"]
            parts += [f"{k} {logs[k]:.3f}" for k in ("ce", "kd", *DistilTrainer.EXTRA_TERMS, "temperature", "alpha",
                                                      "beta") if k in logs]
            parts += [f"lr {logs.get('learning_rate', 0):.2e}", f"{logs.get('target_tokens_per_s', 0):,.0f} tgt tok/s"]
            log.info("%s | %s", where, " | ".join(parts))
        elif "eval_bleu" in logs:
            log.info("%s | dev BLEU %.2f chrF %.1f distinct %.2f (%.0fs)", where, logs["eval_bleu"],
                     logs.get("eval_chrf", 0), logs.get("eval_distinct", 0), logs.get("eval_runtime", 0))


def tensorboard_callback(log_dir: Path) -> TrainerCallback:
    """transformers' TensorBoard logger, writing into ``log_dir`` (rank zero only, created lazily)."""
    callback = TensorBoardCallback()
    callback.logging_dir = str(log_dir)
    return callback


class NonFiniteGuard(TrainerCallback):
    """Skips every update whose gradients are not finite (a NaN/inf loss gives such gradients): the gradients are
    dropped before the optimizer step, so the weights, the optimizer state and every later checkpoint stay finite.
    After ``limit`` skipped updates the training stops with one :class:`TrainingDiverged` line naming the step, the
    last good checkpoint and what to change.

    Under fp16 the GradScaler skips an update whose scaled gradients overflow and halves its scale, and it doubles
    the scale again after each run of clean updates (its growth interval), so an overflow right after a clean update
    is the scaler probing, not a divergence: it is dropped without counting. Overflows in a row count (a non-finite
    loss overflows at every scale)."""

    def __init__(self, name: str, checkpoints: Path, limit: int):
        self.name, self.checkpoints, self.limit = name, Path(checkpoints), limit
        self.skipped: list[int] = []
        self.previous_skipped = False

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if not grads or torch.isfinite(torch.nn.utils.get_total_norm(grads)):
            self.previous_skipped = False
            return
        for parameter in model.parameters():
            parameter.grad = None  # torch optimizers leave parameters without a gradient untouched
        probe = getattr(args, "fp16", False) and not self.previous_skipped
        self.previous_skipped = True
        if probe:  # the GradScaler skips this update too and lowers its scale
            log.info("%s: update %d skipped: fp16 gradients overflowed at the loss scale (the scale is lowered)",
                     self.name, state.global_step + 1)
            return
        self.skipped.append(state.global_step + 1)
        log.warning("%s: update %d skipped: non-finite loss or gradients (%d of at most %d)", self.name,
                    state.global_step + 1, len(self.skipped), self.limit)
        if len(self.skipped) >= self.limit:
            saved = sorted(self.checkpoints.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
            last = f"the last good checkpoint is {saved[-1]}" if saved else "no checkpoint was saved yet"
            raise TrainingDiverged(
                f"{self.name}: the loss or gradients were not finite in {len(self.skipped)} updates (first at update "
                f"{self.skipped[0]}, last at {self.skipped[-1]}); {last}: lower the learning rate, set precision=fp32 "
                "or raise distill.temperature, then continue with --resume")
