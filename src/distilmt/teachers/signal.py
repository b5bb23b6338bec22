"""Where the teacher's signal comes from.

The trainer calls ``signal.logits(batch)`` (or ``signal.topk(batch)`` where a cache offers it); anything whose
softmax is the teacher's distribution over the student's vocabulary for each target position will do (logits, log-probabilities,
or a top-k cache with ``-inf`` elsewhere). A live frozen teacher is the first implementation; a cache of
top-k probabilities, generated translations and ensembles plug in here without touching the trainer.
Hidden-state and attention distillation need more than a distribution: they call the optional
``signal.outputs(batch, hidden=True, attentions=True)`` (the full model output), which only a live teacher has.
"""

from __future__ import annotations

from typing import Protocol

import torch


class TeacherSignal(Protocol):
    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``[batch, target_length, vocab]`` scores aligned with ``batch["labels"]``."""
        ...

    def to(self, device: torch.device) -> "TeacherSignal":
        ...


class LiveTeacher:
    """A frozen teacher model run in eval mode without gradients, teacher-forced on the batch's targets."""

    def __init__(self, model, bf16: bool = False):
        self.model = model.eval()
        self.model.requires_grad_(False)
        self.bf16 = bf16

    def to(self, device: torch.device) -> "LiveTeacher":
        self.model.to(device)
        return self

    @torch.no_grad()
    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        device = batch["input_ids"].device
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             decoder_input_ids=batch["decoder_input_ids"], use_cache=False)
        return out.logits

    @torch.no_grad()
    def outputs(self, batch: dict[str, torch.Tensor], hidden: bool = False, attentions: bool = False):
        """The teacher's full model output on the batch: ``.logits`` and, when asked, ``encoder_hidden_states``,
        ``decoder_hidden_states`` (embeddings + one per layer) and ``encoder_attentions``, ``decoder_attentions``,
        ``cross_attentions`` (one ``[batch, heads, query, key]`` per layer) for hidden-state and attention KD.

        Attention weights need eager attention (SDPA does not return them): the model is switched to it here.
        """
        if attentions and self.model.config._attn_implementation != "eager":
            self.model.set_attn_implementation("eager")
        device = batch["input_ids"].device
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              decoder_input_ids=batch["decoder_input_ids"], use_cache=False,
                              output_hidden_states=hidden, output_attentions=attentions)


class CausalTeacher(LiveTeacher):
    """A frozen causal LM scoring the student's own prompt + target sequences (:mod:`distilmt.causal`).

    Teacher and student share one vocabulary (:func:`distilmt.causal.check_shared_vocabulary`), hence one
    tokenization of the same prompt and target: ``logits(batch)`` is the teacher's ``[batch, length, vocab_size]``
    at every position of ``batch["input_ids"]`` (position t predicts token t + 1, like the student's), cut to the
    shared real vocabulary ``vocab_size`` so embedding matrices padded to other sizes do not matter. The trainer
    shifts both and keeps the target positions only.
    """

    def __init__(self, model, vocab_size: int, bf16: bool = False):
        super().__init__(model, bf16=bf16)
        self.vocab_size = vocab_size

    @torch.no_grad()
    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        device = batch["input_ids"].device
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
        return out.logits[..., : self.vocab_size]


