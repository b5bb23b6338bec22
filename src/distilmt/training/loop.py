"""Train one model: our TrainConfig as the Trainer's arguments, the datasets, callbacks and resume, then save the best."""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import math
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import EarlyStoppingCallback, Seq2SeqTrainingArguments, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from ..config import DistillConfig, TrainConfig
from ..data.batching import ParallelDataset, Seq2SeqCollator, TokenBatchSampler
from ..data.prompt import CausalCollator, CausalDataset
from ..errors import DiskFull, TrainingDiverged
from ..models.generation import cut_sources, max_positions
from ..models.mutual import MutualPair, make_peer
from ..teachers.signal import TeacherSignal
from .callbacks import LogLines, NonFiniteGuard, bleu_metric, tensorboard_callback
from .precision import resolve_precision
from .trainer import DistilTrainer

log = logging.getLogger("distilmt.training.trainer")


def lr_schedule_arguments(cfg: TrainConfig, max_steps: int) -> dict:
    """transformers' scheduler arguments for ``cfg.lr_schedule`` (the warm-up is never longer than the run)."""
    warmup = min(cfg.warmup_steps, max(max_steps - 1, 0))
    if cfg.lr_schedule == "wsd":  # warm-up, stable at the peak, linear decay to 0 over the last decay_fraction
        decay = min(max(1, round(cfg.decay_fraction * max_steps)), max_steps - warmup)
        return {"lr_scheduler_type": "warmup_stable_decay", "warmup_steps": warmup,
                "lr_scheduler_kwargs": {"num_decay_steps": decay, "decay_type": "linear"}}
    names = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}
    return {"lr_scheduler_type": names[cfg.lr_schedule], "warmup_steps": warmup}


def training_arguments(cfg: TrainConfig, out_dir: Path, steps_per_epoch: int,
                       layerdrop: bool = False) -> Seq2SeqTrainingArguments:
    """The Trainer's arguments from our TrainConfig: epochs or steps, the lr schedule with warm-up, the precision
    (``cfg.precision`` resolved for this device: bf16 or fp16 autocast, or none), TensorBoard, and when to evaluate
    and checkpoint: at each epoch end or every N updates as ``cfg.eval_steps`` decides for an epoch of
    ``steps_per_epoch`` batches (:meth:`TrainConfig.eval_interval`), the checkpoints at the same points so the best
    one by dev BLEU can be loaded at the end (no evaluation with ``eval_every_epoch`` off: checkpoints only)."""
    precision = resolve_precision(cfg.precision)
    max_steps = cfg.max_steps or math.ceil(cfg.epochs * steps_per_epoch / cfg.grad_accum)
    updates_per_epoch = max(1, steps_per_epoch // cfg.grad_accum)
    every = cfg.eval_interval(updates_per_epoch)  # 0 = at each epoch end
    strategy = ("steps" if every else "epoch") if cfg.eval_every_epoch else "no"
    return Seq2SeqTrainingArguments(
        output_dir=str(out_dir / "checkpoints"),
        report_to="none",  # TensorBoard is added as a callback writing to our log_dir (see tensorboard_callback)
        max_steps=max_steps,
        learning_rate=cfg.learning_rate,
        **lr_schedule_arguments(cfg, max_steps),
        weight_decay=cfg.weight_decay,
        adam_beta2=0.98,
        max_grad_norm=cfg.max_grad_norm,
        gradient_accumulation_steps=cfg.grad_accum,
        per_device_eval_batch_size=64,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        seed=cfg.seed,
        logging_steps=max(1, min(50, updates_per_epoch // 4)),
        eval_strategy=strategy,
        eval_steps=every or None,
        save_strategy=strategy if strategy != "no" else "steps",
        save_steps=every or updates_per_epoch,
        save_total_limit=2,
        load_best_model_at_end=strategy != "no",
        restore_callback_states_from_checkpoint=True,  # a resumed run keeps early stopping's count of evaluations
        metric_for_best_model="bleu",
        greater_is_better=True,
        predict_with_generate=True,
        generation_num_beams=cfg.eval_beams,
        generation_max_length=128,
        dataloader_num_workers=0,
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        ddp_find_unused_parameters=layerdrop,  # LayerDrop (e.g. NLLB configs) skips layers: DDP must look
        remove_unused_columns=False,
    )


def train_seq2seq(model, tokenizer, train_pairs, dev_pairs, cfg: TrainConfig, out_dir: Path, log_dir: Path,
                  max_tokens: int, teacher: TeacherSignal | None = None, distill: DistillConfig | None = None,
                  resume: bool = False, callbacks: list[TrainerCallback] | None = None, name: str = "",
                  prompt=None):
    """Train ``model`` on the pairs (with a teacher signal when given) and save the best one to ``out_dir``.

    Returns the trainer (its ``state.log_history`` holds the curves). The best checkpoint by dev BLEU is
    loaded at the end and saved with its tokenizer as a plain Hugging Face directory; dev BLEU and checkpoints come
    at each epoch end or every N updates (``cfg.eval_steps``), and early stopping counts those evaluations. With
    ``distill.mutual`` the model is trained as a :class:`MutualPair` with a peer made by ``distill.mutual_peer`` (a copy of the
    student's initial weights, or a fresh one from seed ``cfg.seed + 1``; or pass a MutualPair): ``out_dir`` holds the first student, ``out_dir/peer`` the second.

    With ``prompt`` (a :class:`~distilmt.data.prompt.TranslationPrompt`) the model is a causal-LM student trained on
    the prompted pairs; its dev BLEU comes from :meth:`DistilTrainer.evaluate`, which translates the dev sources
    through the prompt (an empty ``dev_pairs`` turns the evaluation, and so early stopping, off).
    """
    out_dir = Path(out_dir)
    if distill is not None and distill.mutual and not isinstance(model, MutualPair):
        model = MutualPair(model, make_peer(model, distill.mutual_peer, cfg.seed + 1))
    cap = min(cfg.max_eval_tokens, max_positions(model, tokenizer))  # a 100k-character dev line cannot crash
    if prompt is not None:  # a causal-LM student (distilmt.recipes.student.train_causal): prompted pairs
        train_set, collator = CausalDataset(train_pairs, prompt, max_tokens), CausalCollator(prompt.pad_token_id)
        dev_set, truncated = causal_dev_pairs(dev_pairs, prompt.tokenizer, cap)  # translated by DistilTrainer.evaluate
        if not dev_set:  # nothing to translate: no dev BLEU, no best checkpoint, no early stopping
            cfg = dataclasses.replace(cfg, eval_every_epoch=False, early_stopping_patience=0)
    else:
        train_set = ParallelDataset(train_pairs, tokenizer, max_tokens,
                                    with_index=teacher is not None and teacher.needs_example_index)
        dev_set = ParallelDataset(dev_pairs, tokenizer, 0, truncate_to=cap)
        truncated = dev_set.truncated
        collator = Seq2SeqCollator(tokenizer.pad_token_id, model.config.decoder_start_token_id)
    if truncated:
        log.info("%s: %d of %d dev sentences cut to %d tokens (train.max_eval_tokens)", name or out_dir.name,
                 truncated, len(dev_set), cap)
    # Under torchrun every process takes 1/WORLD_SIZE of the batches, so an epoch has that many fewer updates.
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    steps_per_epoch = math.ceil(len(TokenBatchSampler(train_set.lengths(), cfg.batch_tokens, cfg.seed)) / world_size)
    layerdrop = any(getattr(model.config, k, 0) for k in ("encoder_layerdrop", "decoder_layerdrop"))
    args = training_arguments(cfg, out_dir, steps_per_epoch, layerdrop)
    updates_per_epoch = max(1, steps_per_epoch // cfg.grad_accum)
    every = cfg.eval_interval(updates_per_epoch)
    log.info("%s: %s %s (train.eval_steps=%s; an epoch has %d updates)", name or out_dir.name,
             "dev BLEU and a checkpoint" if args.eval_strategy != "no" else "a checkpoint (no dev BLEU)",
             f"every {every} updates" if every else "at each epoch end", cfg.eval_steps, updates_per_epoch)
    all_callbacks = [tensorboard_callback(log_dir), LogLines(name or out_dir.name),
                     NonFiniteGuard(name or out_dir.name, out_dir / "checkpoints", cfg.max_nonfinite_steps),
                     *(callbacks or [])]
    if cfg.early_stopping_patience and args.eval_strategy != "no":
        all_callbacks.append(EarlyStoppingCallback(cfg.early_stopping_patience))
    trainer = DistilTrainer(
        model=model, args=args, train_dataset=train_set, eval_dataset=dev_set if len(dev_set) else None,
        data_collator=collator, processing_class=tokenizer,
        compute_metrics=bleu_metric(tokenizer) if prompt is None else None,  # a causal student: evaluate() scores
        callbacks=all_callbacks, teacher=teacher, distill=distill, label_smoothing=cfg.label_smoothing,
        batch_tokens=cfg.batch_tokens, prompt=prompt,
    )
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    checkpoint = last_checkpoint(out_dir)
    if resume and checkpoint is None:
        log.info("no checkpoint under %s: starting from scratch", out_dir / "checkpoints")
    elif not resume and checkpoint is not None:
        log.warning("%s holds an interrupted training (%s); starting over — pass --resume to continue it",
                    out_dir, checkpoint.name)
        checkpoint = None
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        bad = [n for n, p in trainer.model.named_parameters() if not torch.isfinite(p).all()]
        if bad:  # never hand over (or let a stage mark complete) a model with NaN/inf weights
            raise TrainingDiverged(f"{name or out_dir.name}: {len(bad)} weight tensors are not finite after training "
                                   f"(e.g. {bad[0]}); nothing was saved to {out_dir}: lower the learning rate or set "
                                   "precision=fp32 and train again")
        if trainer.is_world_process_zero():
            trainer.save_model(str(out_dir))
            tokenizer.save_pretrained(str(out_dir))
    except (OSError, RuntimeError, SafetensorError) as exc:
        if not disk_full(exc):
            raise
        kept = last_checkpoint(out_dir)
        raise DiskFull(f"{out_dir}: the disk is full (while writing a checkpoint, log or the model); "
                       f"{f'the last complete checkpoint is {kept.name}' if kept else 'no complete checkpoint yet'}: "
                       "free some space and continue with --resume") from None
    return trainer


def causal_dev_pairs(dev_pairs, tokenizer, cap: int) -> tuple[list[tuple[str, str]], int]:
    """A causal student's dev pairs as text, each source and reference longer than ``cap`` tokens cut to that many
    (as the seq2seq path cuts its dev sources and labels), and how many pairs were cut."""
    pairs = list(dev_pairs)
    if not pairs:
        return [], 0
    sources, _ = cut_sources(tokenizer, [s for s, _ in pairs], cap)
    references, _ = cut_sources(tokenizer, [t for _, t in pairs], cap)
    cut = sum(s != s0 or t != t0 for (s0, t0), s, t in zip(pairs, sources, references))
    return list(zip(sources, references)), cut


CHECKPOINT_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt")
"""What a checkpoint the Trainer finished writing holds besides the model (trainer_state.json comes last)."""


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` cannot be resumed from (a file missing, the state unreadable), or None when it is whole."""
    missing = [name for name in CHECKPOINT_FILES if not (checkpoint / name).is_file()]
    if not any((checkpoint / name).is_file() for name in ("model.safetensors", "pytorch_model.bin")):
        missing.insert(0, "model.safetensors")
    if missing:
        return f"no {missing[0]}"
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except ValueError:
        return "trainer_state.json is not valid JSON"
    return None


def disk_full(exc: BaseException) -> bool:
    """True for the ways a full disk surfaces while torch/safetensors write: ENOSPC, or torch's zip writer's
    "unexpected pos" / safetensors' "No space left on device (os error 28)"."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    text = str(exc)
    return "No space left on device" in text or "unexpected pos" in text


def last_checkpoint(out_dir: Path) -> Path | None:
    """The newest *complete* ``checkpoint-N`` under ``out_dir/checkpoints`` (None when there is none). A checkpoint a
    crash left half-written is skipped, with a warning naming it and what it lacks."""
    ckpt_dir = Path(out_dir) / "checkpoints"
    if not ckpt_dir.is_dir():
        return None
    found = [p for p in ckpt_dir.iterdir() if p.is_dir() and re.fullmatch(r"checkpoint-\d+", p.name)]
    for checkpoint in sorted(found, key=lambda p: int(p.name.split("-")[1]), reverse=True):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return checkpoint
        log.warning("%s is incomplete (%s), probably cut off while it was written: skipped", checkpoint, problem)
    return None
