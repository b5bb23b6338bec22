"""Greedy generation helpers of the monitor: batch encoding, eval mode, greedy translation.

To be replaced by a shared generation module; until then :mod:`.scores` and :mod:`.callback` use them.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


MAX_SOURCE_TOKENS = 256


def model_device(model) -> torch.device:
    """The device of the model's first parameter (the CPU for a model without parameters)."""
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without parameters
        return torch.device("cpu")


@contextmanager
def evaluating(model):
    """Eval mode (no dropout) and no autograd for the block; the previous mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def decoder_start(model) -> int:
    """The model's decoder start token id (from its config or generation config, else its pad token id)."""
    for source in (model.config, getattr(model, "generation_config", None)):
        value = getattr(source, "decoder_start_token_id", None) if source is not None else None
        if value is not None:
            return int(value)
    pad = getattr(model.config, "pad_token_id", None)
    if pad is None:
        raise ValueError("the model has neither decoder_start_token_id nor pad_token_id in its config")
    return int(pad)


def encode(tokenizer, sources: list[str], device) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` of ``sources`` (padded, cut at MAX_SOURCE_TOKENS) on ``device``."""
    enc = tokenizer(sources, return_tensors="pt", padding=True, truncation=True, max_length=MAX_SOURCE_TOKENS)
    return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}


def greedy_translate(model, tokenizer, sources: list[str], max_new_tokens: int = 128,
                     generate_kwargs: dict | None = None) -> list[str]:
    """Greedy translations of ``sources`` in one batch, decoded to text, in eval mode without grad.

    The output length is capped at ``2 * source tokens + 10`` (and ``max_new_tokens``), so a student
    that never emits ``</s>`` costs a bounded time.
    """
    with evaluating(model):
        enc = encode(tokenizer, sources, model_device(model))
        cap = max(1, min(max_new_tokens, 2 * enc["input_ids"].shape[1] + 10))
        kwargs = {"do_sample": False, "num_beams": 1, "max_new_tokens": cap, "use_cache": True}
        kwargs.update(generate_kwargs or {})
        out = model.generate(**enc, **kwargs)
    return [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)]
