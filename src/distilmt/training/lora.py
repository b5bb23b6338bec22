"""Training with LoRA adapters: the adapters of :mod:`distilmt.models.lora` trained by the ordinary trainer."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..config import LoRAConfig, TrainConfig
from ..models.lora import BASE_DIR, add_lora, save_merged
from ..ranks import is_main
from .loop import train_seq2seq


def lora_train_config(train: TrainConfig, cfg: LoRAConfig, **changes) -> TrainConfig:
    """``train`` with LoRA's learning rate (and any other ``changes``): same batches, same number of updates."""
    return dataclasses.replace(train, learning_rate=cfg.learning_rate, **changes)


def train_lora(model, tokenizer, train_pairs, dev_pairs, train_cfg: TrainConfig, cfg: LoRAConfig, out_dir: Path,
               log_dir: Path, max_tokens: int, base_path: str | Path | None = None, **train_kwargs):
    """Train LoRA adapters on ``model`` with :func:`distilmt.training.trainer.train_seq2seq` (``train_kwargs``: teacher,
    distill, resume, callbacks ...), then write ``out_dir`` as :func:`save_merged` describes. Returns the trainer.

    ``train_cfg`` is used as given (see :func:`lora_train_config` for LoRA's learning rate). Without ``base_path``
    (the base weights are saved nowhere else, e.g. a freshly derived student) the base is saved to
    ``out_dir/base/`` first, so the adapters can be reloaded and merged again later.
    """

    out_dir = Path(out_dir)
    if base_path is None:
        base_path = out_dir / BASE_DIR
        if not (base_path / "config.json").is_file() and is_main():  # under torchrun rank 0 writes it
            model.save_pretrained(str(base_path))
            tokenizer.save_pretrained(str(base_path))
    wrapped = add_lora(model, cfg, base_path)
    trainer = train_seq2seq(wrapped, tokenizer, train_pairs, dev_pairs, train_cfg, out_dir, log_dir, max_tokens,
                            **train_kwargs)
    if trainer.is_world_process_zero():
        save_merged(wrapped, tokenizer, out_dir, cfg)
    return trainer
