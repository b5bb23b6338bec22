"""The trainer's loss terms as objects: one small interface, one class per method, summed once.

Each :class:`LossTerm` has a ``name`` (its key in the training log), a ``weight(now)`` (``now``: the scheduled
``temperature``, ``alpha`` and ``beta`` of this step) and ``term(step) -> torch.Tensor``, a *sum* over positions
that :class:`distilmt.training.trainer.DistilTrainer` divides once, with every other term, by the global target-token
count. ``step`` is a :class:`StepContext`: the batch, the student's outputs and the teacher's signal (logits, top
k, full outputs), computed once per micro-batch by the trainer and read by every term.

:func:`build_terms` picks the active terms from the :class:`~distilmt.config.DistillConfig` and the teacher's
declared capabilities (:class:`distilmt.teachers.signal.TeacherSignal`); :func:`summed` adds the weighted terms that
apply to a step and records each one's value in ``step.values`` for the log.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..config import DistillConfig
from ..losses import divergence_sum, mutual_kl, target_mask, token_kd_objective
from ..teachers.signal import TeacherSignal
from .intermediate import IntermediateKD


@dataclasses.dataclass
class StepContext:
    """What one micro-batch's terms read, computed once by the trainer.

    ``logits`` and ``labels`` default to ``outputs.logits`` and ``inputs["labels"]`` (a causal student's are the
    shifted ones). The teacher fields are None where there is no such signal this step: no teacher, no KD, not
    training, or an on-policy step (``on_policy``), whose KD is on the student's own translations instead of the
    reference. ``values`` collects the terms' values (and the token term's ``ce``, ``kd``, ``n_tokens``).
    """

    inputs: dict[str, torch.Tensor]
    outputs: Any
    now: dict[str, float]
    training: bool = True
    model: Any = None
    logits: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    teacher_logits: torch.Tensor | None = None
    teacher_topk: tuple[torch.Tensor, torch.Tensor] | None = None
    teacher_outputs: Any = None
    on_policy: bool = False
    peer_logits: torch.Tensor | None = None
    values: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.logits is None:
            self.logits = self.outputs.logits
        if self.labels is None:
            self.labels = self.inputs["labels"]

    @property
    def temperature(self) -> float:
        return self.now["temperature"]

    @property
    def alpha(self) -> float:
        return self.now["alpha"]

    @property
    def beta(self) -> float:
        return self.now["beta"]

    @property
    def source_mask(self) -> torch.Tensor:
        return self.inputs["attention_mask"].bool()

    @property
    def target_mask(self) -> torch.Tensor:
        return self.labels.ne(-100)


class LossTerm:
    """One term of the loss: ``weight(now) * term(step)``, ``term(step)`` a sum over positions.

    Class attributes say what a term needs: ``needs_hidden`` / ``needs_attentions`` (the student's forward is
    asked for hidden states / attention maps), ``needs_teacher_outputs`` (the teacher's full output instead of
    its logits alone), ``training_only`` (skipped in evaluation). ``applies(step)`` says whether the term is in
    this step's loss (default: always, or in training only).
    """

    name: str = ""
    needs_hidden: bool = False
    needs_attentions: bool = False
    needs_teacher_outputs: bool = False
    training_only: bool = False

    def weight(self, now: dict[str, float]) -> float:
        return 1.0

    def applies(self, step: StepContext) -> bool:
        return step.training or not self.training_only

    def replaces_reference_kd(self) -> bool:
        """Called once per training step: True when this term takes the KD over from the reference batch
        (the trainer then asks the teacher for no reference signal). Default False."""
        return False

    def __call__(self, step: StepContext) -> torch.Tensor:
        raise NotImplementedError


class TokenKDTerm(LossTerm):
    """``alpha * T^2 * D(p_t^T, p_s^T) + beta * CE_ls`` (:func:`distilmt.losses.token_kd_objective`; alpha and
    beta are inside, so the weight is 1). Plain ``beta * CE`` when the step has no teacher signal. Records
    ``ce``, ``kd`` and ``n_tokens`` in ``step.values``."""

    name = "token_kd"

    def __init__(self, distill: DistillConfig, label_smoothing: float = 0.0):
        self.distill = distill
        self.label_smoothing = label_smoothing

    def __call__(self, step: StepContext) -> torch.Tensor:
        d = self.distill
        parts = token_kd_objective(step.logits, step.teacher_logits, step.labels, alpha=step.alpha, beta=step.beta,
                                   temperature=step.temperature, label_smoothing=self.label_smoothing,
                                   teacher_topk=step.teacher_topk, divergence=d.divergence,
                                   divergence_beta=d.divergence_beta)
        step.values.update(ce=parts["ce"], kd=parts["kd"], n_tokens=parts["n_tokens"])
        return parts["total"]


class OnPolicyTerm(LossTerm):
    """``T^2 * divergence(student, teacher)`` (``distill.on_policy_divergence``) on the student's own translations
    of the batch's sources, weighted by alpha, for the drawn fraction ``on_policy_ratio`` of training batches. On
    those the token term sees no teacher signal (CE on the reference only) and this term's value is logged as
    ``kd``. ``translate(model, inputs)`` makes the teacher-forcing batch of the student's translations
    (:meth:`distilmt.training.trainer.DistilTrainer.student_translations`); the latest is kept as ``last_policy``."""

    name = "kd"
    training_only = True

    def __init__(self, distill: DistillConfig, teacher: TeacherSignal,
                 translate: Callable[[Any, dict], dict[str, torch.Tensor]], seed: int = 0):
        self.distill = distill
        self.teacher = teacher
        self.translate = translate
        self.rng = random.Random(seed)  # the coin flips; never touches torch's RNG
        self.last_policy: dict[str, torch.Tensor] | None = None

    def weight(self, now: dict[str, float]) -> float:
        return now["alpha"]

    def replaces_reference_kd(self) -> bool:
        ratio = self.distill.on_policy_ratio
        return ratio >= 1 or (ratio > 0 and self.rng.random() < ratio)

    def applies(self, step: StepContext) -> bool:
        return step.training and step.on_policy

    def __call__(self, step: StepContext) -> torch.Tensor:
        d, t = self.distill, step.temperature
        policy = self.translate(step.model, step.inputs)
        student_logits = step.model(input_ids=policy["input_ids"], attention_mask=policy["attention_mask"],
                                    decoder_input_ids=policy["decoder_input_ids"], use_cache=False).logits
        teacher_batch = {k: v for k, v in policy.items() if k != "labels"}  # ensemble: no weight NLL on these
        teacher_logits = signal_logits(self.teacher, teacher_batch, t)
        kd, _ = divergence_sum(d.on_policy_divergence, student_logits, teacher_logits, target_mask(policy["labels"]),
                               t, beta=d.on_policy_beta)
        self.last_policy = policy
        return kd * t**2


class EnsembleNLLTerm(LossTerm):
    """The NLL of the references under a learned ensemble's mixture (``teacher.weight_nll``; it moves the
    mixture weights only), on training steps whose KD used the ensemble's reference logits."""

    name = "ensemble_nll"
    training_only = True

    def __init__(self, teacher: TeacherSignal):
        self.teacher = teacher

    def applies(self, step: StepContext) -> bool:
        return step.training and step.teacher_logits is not None

    def __call__(self, step: StepContext) -> torch.Tensor:
        return self.teacher.weight_nll(step.inputs)


class IntermediateTerm(LossTerm):
    """A fixed weight x a sum over the mapped layers of :class:`IntermediateKD`, encoder positions included; it needs
    the teacher's full outputs and applies in training only."""

    needs_teacher_outputs = True
    training_only = True

    def __init__(self, intermediate: IntermediateKD, weight: float):
        self.intermediate = intermediate
        self._weight = weight

    def weight(self, now: dict[str, float]) -> float:
        return self._weight


class HiddenTerm(IntermediateTerm):
    """``hidden_weight`` x the hidden-state distance of the mapped layers (:meth:`IntermediateKD.hidden_sum`)."""

    name = "hidden"
    needs_hidden = True

    def __call__(self, step: StepContext) -> torch.Tensor:
        return self.intermediate.hidden_sum(step.outputs, step.teacher_outputs, step.source_mask, step.target_mask)


class AttentionTerm(IntermediateTerm):
    """``attention_weight`` x the attention-map divergence of the mapped layers
    (:meth:`IntermediateKD.attention_sum`)."""

    name = "attention"
    needs_attentions = True

    def __call__(self, step: StepContext) -> torch.Tensor:
        return self.intermediate.attention_sum(step.outputs, step.teacher_outputs, step.source_mask,
                                               step.target_mask)


class MutualTerm(LossTerm):
    """Deep mutual learning: ``mutual_weight * T^2 * KL(p_peer^T || p_self^T)`` with the peer (``step.peer_logits``)
    detached (:func:`distilmt.losses.mutual_kl`)."""

    name = "mutual"

    def __init__(self, distill: DistillConfig):
        self.distill = distill

    def weight(self, now: dict[str, float]) -> float:
        return self.distill.mutual_weight

    def __call__(self, step: StepContext) -> torch.Tensor:
        t = step.temperature
        return mutual_kl(step.logits, step.peer_logits, target_mask(step.labels), t)[0] * t**2


def signal_logits(teacher: TeacherSignal, batch: dict[str, torch.Tensor], temperature: float) -> torch.Tensor:
    """The teacher's logits on ``batch``; at ``temperature`` for a signal that applies it itself (an ensemble)."""
    if teacher.applies_temperature:
        return teacher.logits(batch, temperature=temperature)
    return teacher.logits(batch)


def build_terms(distill: DistillConfig, teacher: TeacherSignal | None, label_smoothing: float = 0.0,
                intermediate: IntermediateKD | None = None, translate=None, seed: int = 0,
                mutual: bool = False) -> list[LossTerm]:
    """The active terms, in the order they are added: the token term always; the on-policy term (a teacher, KD
    and ``on_policy_ratio > 0``); the ensemble NLL (a teacher with ``learned`` weights); the hidden-state and
    attention terms (an ``intermediate`` with layers to match). With ``mutual``: the token and mutual terms only
    (the terms of each student of a :class:`distilmt.mutual.MutualPair`)."""
    terms: list[LossTerm] = [TokenKDTerm(distill, label_smoothing)]
    if mutual:
        return terms + [MutualTerm(distill)]
    if teacher is not None and distill.uses_kd and distill.on_policy_ratio > 0:
        terms.append(OnPolicyTerm(distill, teacher, translate, seed))
    if teacher is not None and teacher.learned:
        terms.append(EnsembleNLLTerm(teacher))
    if intermediate is not None and intermediate.needs_hidden:
        terms.append(HiddenTerm(intermediate, distill.hidden_weight))
    if intermediate is not None and intermediate.needs_attentions:
        terms.append(AttentionTerm(intermediate, distill.attention_weight))
    return terms


def summed(terms: Sequence[LossTerm], step: StepContext) -> torch.Tensor:
    """``sum(term.weight(now) * term(step))`` over the terms that apply to ``step``, in order; each value is
    recorded under its name in ``step.values``."""
    total = None
    for term in terms:
        if not term.applies(step):
            continue
        value = term(step)
        step.values[term.name] = value
        weight = term.weight(step.now)
        weighted = value if weight == 1 else weight * value
        total = weighted if total is None else total + weighted
    return total if total is not None else torch.zeros((), device=step.logits.device)


__all__ = ["AttentionTerm", "EnsembleNLLTerm", "HiddenTerm", "LossTerm", "MutualTerm", "OnPolicyTerm", "StepContext",
           "TokenKDTerm", "build_terms", "signal_logits", "summed"]


def shift_for_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor | None, labels: torch.Tensor):
    """Align a causal LM's outputs with its labels: the logits at position t predict token t + 1, so drop the last
    logit of both models and the first label. With a teacher the student's logits are cut to the teacher signal's
    vocabulary (the shared real vocabulary, see :func:`check_shared_vocabulary`)."""
    student = student_logits[:, :-1]
    teacher = None
    if teacher_logits is not None:
        teacher = teacher_logits[:, :-1]
        student = student[..., : teacher.shape[-1]]
    return student, teacher, labels[:, 1:]
