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
from accelerate.utils import send_to_device

from ..models.generation import model_device
from ..models.trim import VocabMap


class TeacherSignal(Protocol):
    """What the trainer asks of a teacher signal: ``logits(batch)`` and ``to(device)``, plus these declared
    capabilities (class attributes, read by the trainer instead of probing with hasattr; defaults here):

    - ``has_topk``: ``topk(batch) -> (ids, log_probs)`` gives the top-k entries alone (a teacher cache); the
      trainer then computes the forward KL on those k entries without a dense tensor. Default False.
    - ``has_outputs``: ``outputs(batch, hidden=..., attentions=...)`` gives the full model output (hidden
      states, attention maps) for hidden-state and attention KD; a live seq2seq teacher only. Default False.
    - ``needs_example_index``: every training batch must carry ``example_index`` (the training set is built
      with ``ParallelDataset(..., with_index=True)``), e.g. to read a cache's rows. Default False.
    - ``applies_temperature``: ``logits(batch, temperature=T)`` applies T itself (an ensemble mixing at T);
      the trainer passes its scheduled T. Default False.
    - ``learned``: the signal has trainable mixture weights (``weights``, an ``nn.Module`` the trainer trains)
      and ``weight_nll(batch)``, their loss on the references. Default False.
    """

    has_topk: bool = False
    has_outputs: bool = False
    needs_example_index: bool = False
    applies_temperature: bool = False
    learned: bool = False

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``[batch, target_length, vocab]`` scores aligned with ``batch["labels"]``."""
        ...

    def to(self, device: torch.device) -> "TeacherSignal":
        ...


class TeacherBase(TeacherSignal):
    """The protocol's capability defaults (all False) for the teachers below to override."""


class LiveTeacher(TeacherBase):
    """A frozen teacher model run in eval mode without gradients, teacher-forced on the batch's targets.

    With ``placed`` the model stays where it was loaded (``teacher.device``: another GPU, the CPU, or sharded by
    ``device_map``): ``to()`` leaves it there, the batch goes to the teacher's device and what it returns comes
    back to the batch's. Its weights may be half precision (``teacher.inference_dtype``); the KD losses work in
    fp32 whatever the teacher's dtype.
    """

    has_outputs = True

    def __init__(self, model, bf16: bool = False, fp16: bool = False, placed: bool = False):
        self.model = model.eval()
        self.model.requires_grad_(False)
        self.bf16, self.fp16 = bf16, fp16  # the student's autocast (train.precision, resolved)
        self.placed = placed

    def _autocast(self, device: torch.device):
        dtype = torch.float16 if self.fp16 and not self.bf16 else torch.bfloat16
        return torch.autocast(device.type, dtype=dtype, enabled=self.bf16 or self.fp16)

    def to(self, device: torch.device) -> "LiveTeacher":
        if not self.placed:
            self.model.to(device)
        return self

    def _run(self, batch: dict[str, torch.Tensor], **inputs):
        """The model on ``inputs`` (taken from ``batch``) on the teacher's device; the output on the batch's."""
        home, device = batch["input_ids"].device, model_device(self.model)  # sharded: where its inputs go
        with self._autocast(device):
            out = self.model(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()})
        return send_to_device(out, home) if device != home else out  # tensors, tuples of them, the ModelOutput

    @torch.no_grad()
    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._run(batch, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         decoder_input_ids=batch["decoder_input_ids"], use_cache=False).logits

    @torch.no_grad()
    def outputs(self, batch: dict[str, torch.Tensor], hidden: bool = False, attentions: bool = False):
        """The teacher's full model output on the batch: ``.logits`` and, when asked, ``encoder_hidden_states``,
        ``decoder_hidden_states`` (embeddings + one per layer) and ``encoder_attentions``, ``decoder_attentions``,
        ``cross_attentions`` (one ``[batch, heads, query, key]`` per layer) for hidden-state and attention KD.

        Attention weights need eager attention (SDPA does not return them): the model is switched to it here.
        """
        if attentions and self.model.config._attn_implementation != "eager":
            self.model.set_attn_implementation("eager")
        return self._run(batch, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         decoder_input_ids=batch["decoder_input_ids"], use_cache=False,
                         output_hidden_states=hidden, output_attentions=attentions)


class CausalTeacher(LiveTeacher):
    """A frozen causal LM scoring the student's own prompt + target sequences (:mod:`distilmt.data.prompt`).

    Teacher and student share one vocabulary (:func:`distilmt.models.vocab.check_shared_vocabulary`), hence one
    tokenization of the same prompt and target: ``logits(batch)`` is the teacher's ``[batch, length, vocab_size]``
    at every position of ``batch["input_ids"]`` (position t predicts token t + 1, like the student's), cut to the
    shared real vocabulary ``vocab_size`` so embedding matrices padded to other sizes do not matter. The trainer
    shifts both and keeps the target positions only.
    """

    has_outputs = False  # outputs() is the seq2seq teacher's (decoder_input_ids): no hidden-state/attention KD

    def __init__(self, model, vocab_size: int, bf16: bool = False, fp16: bool = False, placed: bool = False):
        super().__init__(model, bf16=bf16, fp16=fp16, placed=placed)
        self.vocab_size = vocab_size

    @torch.no_grad()
    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._run(batch, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         use_cache=False).logits[..., : self.vocab_size]




def topk_to_dense(ids: torch.Tensor, log_probs: torch.Tensor, vocab_size: int, labels: torch.Tensor) -> torch.Tensor:
    """``[batch, length, vocab_size]`` logits from a top-k signal: the log-probabilities at their ids, ``-inf``
    elsewhere (softmax at any T = the top k renormalised); padded rows (labels -100) are 0, finite and masked.
    An id listed more than once (the ``-inf`` placeholders of :meth:`VocabMap.restrict_topk`) keeps its largest value."""
    n, length, _ = ids.shape
    dense = torch.full((n, length, vocab_size), float("-inf"), device=ids.device)
    dense.scatter_reduce_(-1, ids, log_probs.to(dense.dtype), reduce="amax")
    return dense.masked_fill(labels.eq(-100).unsqueeze(-1), 0.0)


class VocabMappedTeacher(TeacherBase):
    """A teacher signal over the full teacher vocabulary, seen by a student with a trimmed one
    (``student.trim_vocab``, :mod:`distilmt.models.trim`): the one place the :class:`VocabMap` is applied.

    The batch's student ids (``input_ids``, ``decoder_input_ids``, ``labels``) are mapped to teacher ids before the
    inner signal reads them; what comes back is the teacher **renormalised over the kept vocabulary**: logits gathered
    at the kept ids (:meth:`VocabMap.restrict_logits`; their softmax is ``p_i / sum_{j kept} p_j``), or a cache's
    top k with the entries outside the kept vocabulary at ``-inf`` (:meth:`VocabMap.restrict_topk`), which the top-k
    renormalisation then drops. Hidden states and attention maps of ``outputs()`` pass through unchanged. The
    inner signal's capabilities are this one's; any other attribute (``model``, ``weights``) is the inner one's.
    """

    MAPPED = ("input_ids", "decoder_input_ids", "labels")

    def __init__(self, signal: TeacherSignal, vocab_map: VocabMap):
        self.signal = signal
        self.vocab_map = vocab_map
        for name in ("has_topk", "has_outputs", "needs_example_index", "applies_temperature", "learned"):
            setattr(self, name, getattr(signal, name))

    def __getattr__(self, name):
        if name in ("signal", "vocab_map"):
            raise AttributeError(name)
        return getattr(self.signal, name)

    def to(self, device: torch.device) -> "VocabMappedTeacher":
        self.signal = self.signal.to(device)
        self.vocab_map.to(device)
        return self

    def teacher_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch in teacher ids."""
        return {k: self.vocab_map.to_teacher(v) if k in self.MAPPED else v for k, v in batch.items()}

    def logits(self, batch: dict[str, torch.Tensor], **kwargs) -> torch.Tensor:
        if self.has_topk:  # dense over the kept vocabulary, from the mapped top k
            ids, log_probs = self.topk(batch)
            return topk_to_dense(ids, log_probs, len(self.vocab_map), batch["labels"])
        return self.vocab_map.restrict_logits(self.signal.logits(self.teacher_batch(batch), **kwargs))

    def topk(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, log_probs = self.signal.topk(self.teacher_batch(batch))
        return self.vocab_map.restrict_topk(ids, log_probs, batch.get("labels"))

    def outputs(self, batch: dict[str, torch.Tensor], **kwargs):
        out = self.signal.outputs(self.teacher_batch(batch), **kwargs)
        out.logits = self.vocab_map.restrict_logits(out.logits)
        return out

    def weight_nll(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.signal.weight_nll(self.teacher_batch(batch))
