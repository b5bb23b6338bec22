"""LoRA (peft): train low-rank adapters on a frozen model, save them, and merge them into a plain model for export.

A LoRA layer keeps its base weight ``W`` frozen and learns ``W + (alpha / r) * B A`` with ``A`` (r x in) and ``B``
(out x r, initialised to zero, so training starts from the base model exactly). Only the adapters train, through our
DistilTrainer like any model (peft's ``PeftModel`` passes the Trainer's keyword arguments through), so LoRA combines
with every loss term (reference CE, token-level KD from a live teacher, sequence-level labels).

A directory written by :func:`save_merged` (the stages ``teacher-lora``, ``student-lora`` and students trained with
``lora.students``)::

    OUT/                  the merged model (W + scale * B A): a plain Hugging Face directory, loads with transformers
                          alone and exports to CTranslate2 like any other model
    OUT/adapter/          adapter_config.json + adapter_model.safetensors: the adapters only (peft)
    OUT/base/             the frozen base weights, when they exist nowhere else (a derived student); a teacher's
                          adapter names the teacher directory as its base instead
    OUT/lora.json         rank, alpha, trainable and total parameters, adapter bytes

peft is a dependency of distilmt (``pip install peft``); it is imported only here and only when LoRA is used.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch

from ..config.sections import LoRAConfig
from ..errors import ModelError
from .loading import load_seq2seq

log = logging.getLogger(__name__)

ADAPTER_DIR, BASE_DIR, SUMMARY = "adapter", "base", "lora.json"
# Attention and feed-forward projections by family: Marian / M2M100 / BART / NLLB (q_proj k_proj v_proj out_proj
# fc1 fc2), T5 (q k v o wi wo, gated wi_0 wi_1), Qwen2 / Llama (q_proj k_proj v_proj o_proj gate_proj up_proj
# down_proj). ``auto`` takes those of them that the model has.
AUTO_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "o_proj", "fc1", "fc2", "gate_proj", "up_proj",
                "down_proj", "q", "k", "v", "o", "wi", "wo", "wi_0", "wi_1")
_PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", "README.md")


def require_peft():
    try:
        import peft
    except ImportError:
        raise ModelError("LoRA needs the peft package: pip install 'peft>=0.13' (it is a dependency of distilmt; "
                         "reinstall with pip install -e .)") from None
    return peft


def _linear_names(model) -> list[str]:
    """Qualified names of the model's linear layers, the output projection (tied to the embeddings) excepted."""
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return [name for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and module is not output]


def target_modules(model, cfg: LoRAConfig) -> list[str] | str:
    """``lora.target_modules`` resolved for ``model``: the module names peft gets (or ``all-linear``).

    ``auto`` keeps the :data:`AUTO_TARGETS` the model has; an explicit name must match a linear layer (as peft
    matches: the full name or its last parts). Raises :class:`ModelError` naming the setting otherwise.
    """
    names = cfg.module_names
    linear = _linear_names(model)
    leaves = {name.rsplit(".", 1)[-1] for name in linear}
    if names == ["all-linear"]:
        return "all-linear"
    if names == ["auto"]:
        found = [name for name in AUTO_TARGETS if name in leaves]
        if not found:
            raise ModelError(f"lora.target_modules: auto knows none of this model's linear layers "
                             f"({', '.join(sorted(leaves)) or 'none'}); list the ones to adapt, e.g. "
                             f"lora.target_modules=[{', '.join(sorted(leaves)[:2])}]")
        return found
    for name in names:
        if not any(full == name or full.endswith("." + name) for full in linear):
            raise ModelError(f"lora.target_modules: '{name}' matches no linear layer of this "
                             f"{model.config.model_type} model; its linear layers are named "
                             f"{', '.join(sorted(leaves))}")
    return list(names)


def add_lora(model, cfg: LoRAConfig, base_path: str | Path | None = None):
    """``model`` wrapped in peft adapters (its own weights frozen, only ``lora_A`` / ``lora_B`` trainable)."""
    peft = require_peft()
    task = peft.TaskType.SEQ_2_SEQ_LM if getattr(model.config, "is_encoder_decoder", False) \
        else peft.TaskType.CAUSAL_LM
    config = peft.LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                             target_modules=target_modules(model, cfg), task_type=task, bias="none")
    wrapped = peft.get_peft_model(model, config)
    if base_path is not None:  # (peft takes it from model.config.name_or_path, empty for a model built here)
        wrapped.peft_config["default"].base_model_name_or_path = str(base_path)
    trainable, total = trainable_parameters(wrapped)
    log.info("LoRA rank %d alpha %g on %s: %s of %s parameters trainable (%.2f%%)", cfg.rank, cfg.alpha,
             ", ".join(config.target_modules) if not isinstance(config.target_modules, str)
             else config.target_modules, f"{trainable:,}", f"{total:,}", 100 * trainable / max(total, 1))
    return wrapped


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def save_merged(wrapped, tokenizer, out_dir: str | Path, cfg: LoRAConfig | None = None):
    """Write ``out_dir/adapter/`` (the adapters) and the merged model into ``out_dir``; returns the merged model.

    Adapter files the Trainer saved at the top of ``out_dir`` are moved out of the way first: a top-level
    ``adapter_config.json`` would make transformers treat the merged directory as an adapter. ``wrapped`` is
    merged in place (peft's ``merge_and_unload``) and must not be used as a PeftModel afterwards.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in _PEFT_FILES:
        (out_dir / name).unlink(missing_ok=True)
    tmp = out_dir / f".{ADAPTER_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    wrapped.save_pretrained(str(tmp))
    shutil.rmtree(out_dir / ADAPTER_DIR, ignore_errors=True)
    os.replace(tmp, out_dir / ADAPTER_DIR)
    trainable, total = trainable_parameters(wrapped)
    merged = wrapped.merge_and_unload()
    merged.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    adapter_bytes = sum(p.stat().st_size for p in (out_dir / ADAPTER_DIR).iterdir() if p.is_file())
    summary = {"trainable_params": trainable, "total_params_with_adapters": total, "adapter_bytes": adapter_bytes,
               **({"rank": cfg.rank, "alpha": cfg.alpha, "dropout": cfg.dropout} if cfg is not None else {})}
    (out_dir / SUMMARY).write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return merged


def load_lora(base, adapter_dir: str | Path, trainable: bool = False):
    """A PeftModel: the base model (a model or a Hugging Face directory) with the adapters of ``adapter_dir``."""
    peft = require_peft()
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ModelError(f"{adapter_dir}: not a LoRA adapter directory (no adapter_config.json)")
    if isinstance(base, (str, Path)):

        base = load_seq2seq(base)[0]
    return peft.PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=trainable)


def merge_lora(base_dir: str | Path, adapter_dir: str | Path, out_dir: str | Path):
    """Merge the adapters of ``adapter_dir`` into the model of ``base_dir`` and save a plain directory at ``out_dir``
    (with the base's tokenizer); returns the merged model."""

    base, tokenizer = load_seq2seq(base_dir)
    merged = load_lora(base, adapter_dir).merge_and_unload()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return merged


