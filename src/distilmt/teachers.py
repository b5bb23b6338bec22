"""Where the teacher's signal comes from.

The trainer only ever calls ``signal.logits(batch)``; anything whose softmax is the teacher's
distribution over the student's vocabulary for each target position will do (logits, log-probabilities,
or a top-k cache with ``-inf`` elsewhere). A live frozen teacher is the first implementation; a cache of
top-k probabilities, generated translations and ensembles plug in here without touching the trainer.
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
