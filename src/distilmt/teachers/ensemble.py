"""Several frozen teachers over the student's vocabulary, combined in probability space (fixed or learned weights)."""

from __future__ import annotations

import torch

from ..losses import mixture_log_probs, mixture_nll, target_mask
from ..models.loading import load_seq2seq
from ..models.vocab import check_same_vocabulary
from .signal import LiveTeacher, TeacherBase


class EnsembleWeights(torch.nn.Module):
    """The mixture weights of an ensemble: fixed (a buffer) or learned (softmax of a trained score vector).

    Learned scores are an ``nn.Parameter`` that :class:`distilmt.training.trainer.DistilTrainer` attaches to the student
    as the submodule ``distil_ensemble`` during ``train()`` only, so the optimizer, checkpoints and resume see
    them and the saved student does not.
    """

    def __init__(self, n_teachers: int, weights: list[float] | None = None, learned: bool = False):
        super().__init__()
        self.learned = learned
        if learned:
            self.scores = torch.nn.Parameter(torch.zeros(n_teachers))  # softmax(0) = uniform at the start
        else:
            w = torch.ones(n_teachers) if weights is None else torch.tensor(weights, dtype=torch.float)
            self.register_buffer("fixed", w / w.sum())

    def log_weights(self) -> torch.Tensor:
        return torch.log_softmax(self.scores, 0) if self.learned else self.fixed.log()

    def forward(self) -> torch.Tensor:
        return self.log_weights().exp()


class EnsembleTeacher(TeacherBase):
    """Several frozen teachers over the student's vocabulary, combined in probability space.

    ``p_mix = sum_k w_k softmax(z_k / T)``. The temperature is applied once, here, to each teacher before mixing:
    ``logits(batch, temperature=T)`` returns ``T * log p_mix``, whose ``softmax(. / T)`` (what every divergence in
    :mod:`distilmt.losses` computes) is exactly ``p_mix``. The trainer passes its scheduled T (it checks
    ``applies_temperature``). With learned weights, ``weight_nll(batch)`` gives the mixture's NLL of the
    references for the trainer to add: the weights learn which teachers predict the references best; the KD
    signal uses the weights detached.
    """

    applies_temperature = True

    def __init__(self, models: list, weights: list[float] | None = None, learned: bool = False, bf16: bool = False,
                 fp16: bool = False, placed: bool = False):
        if not models:
            raise ValueError("an ensemble needs at least one teacher")
        self.teachers = [LiveTeacher(m, bf16=bf16, fp16=fp16, placed=placed) for m in models]
        self.weights = EnsembleWeights(len(models), weights, learned)
        self._label_log_probs: torch.Tensor | None = None

    @classmethod
    def load(cls, directories: list, tokenizer, student=None, weights=None, bf16: bool = False,
             fp16: bool = False, place: dict | None = None) -> "EnsembleTeacher":
        """The teachers saved in ``directories``, each refused (ModelError naming its directory) unless it shares
        the student's vocabulary. ``weights``: None (uniform), a list of numbers, or 'learned'. ``place``: the
        ``device`` / ``dtype`` to load each teacher with (:func:`distilmt.models.loading.placement`)."""

        models = []
        for directory in directories:
            model, teacher_tokenizer = load_seq2seq(directory, **(place or {}))
            check_same_vocabulary(teacher_tokenizer, tokenizer, model, student, where=f"teacher in {directory}")
            models.append(model)
        learned = weights == "learned"
        return cls(models, None if learned else weights, learned=learned, bf16=bf16, fp16=fp16,
                   placed="device" in (place or {}))

    @property
    def learned(self) -> bool:
        return self.weights.learned

    def to(self, device: torch.device) -> "EnsembleTeacher":
        for teacher in self.teachers:
            teacher.to(device)
        self.weights.to(device)
        return self

    def logits(self, batch: dict[str, torch.Tensor], temperature: float = 1.0) -> torch.Tensor:

        all_logits = [teacher.logits(batch) for teacher in self.teachers]
        if self.learned and "labels" in batch:  # each teacher's log p(y) at T = 1, for weight_nll
            labels = batch["labels"]
            safe = labels.masked_fill(labels.eq(-100), 0).unsqueeze(-1)
            self._label_log_probs = torch.stack(
                [torch.log_softmax(z.float(), -1).gather(-1, safe).squeeze(-1) for z in all_logits])
        with torch.no_grad():
            mixed = mixture_log_probs(all_logits, self.weights(), temperature)
        return mixed * temperature

    def weight_nll(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Summed NLL of the references under the mixture with the learned weights (gradient to the weights only),
        from the teachers' outputs of the latest ``logits(batch)`` call; 0 with fixed weights."""

        if not self.learned or self._label_log_probs is None:
            return torch.zeros((), device=batch["labels"].device)
        total, _ = mixture_nll(self._label_log_probs, self.weights.log_weights(), target_mask(batch["labels"]))
        self._label_log_probs = None
        return total
