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
    """A frozen teacher model run in eval mode without gradients, teacher-forced on the batch's targets."""

    has_outputs = True

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

    has_outputs = False  # outputs() is the seq2seq teacher's (decoder_input_ids): no hidden-state/attention KD

    def __init__(self, model, vocab_size: int, bf16: bool = False):
        super().__init__(model, bf16=bf16)
        self.vocab_size = vocab_size

    @torch.no_grad()
    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        device = batch["input_ids"].device
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
        return out.logits[..., : self.vocab_size]


class CachedTeacher(TeacherBase):
    """The teacher's top-k next-token distribution read back from a teacher cache (see :mod:`distilmt.cache`).

    No teacher model is loaded: each training batch reads its examples' rows from the memory-mapped shards,
    found by the batch's ``example_index`` (``ParallelDataset(..., with_index=True)`` and ``Seq2SeqCollator``
    put it there). ``logits(batch)`` returns the cached log-probabilities at the stored ids and ``-inf``
    elsewhere, so its softmax at any temperature T is the top-k renormalised ``p_i^(1/T) / sum_j p_j^(1/T)``;
    ``topk(batch)`` returns the same as ``(ids, log_probs)`` ``[batch, target_length, k]`` so the trainer can
    compute the KL on the k entries alone (:func:`distilmt.losses.sparse_forward_kl`) without a dense tensor.
    """

    has_topk = True
    needs_example_index = True

    def __init__(self, cache):
        self.cache = cache
        self.device = torch.device("cpu")

    @classmethod
    def open(cls, cache_dir, pairs, tokenizer, teacher_id: str, max_tokens: int = 0) -> "CachedTeacher":
        """The cache in ``cache_dir``, refused (CacheError) unless made from these pairs, tokenizer and teacher."""
        from .cache import TeacherCache, cache_fingerprint

        return cls(TeacherCache(cache_dir, cache_fingerprint(pairs, tokenizer, teacher_id, max_tokens)))

    def to(self, device: torch.device) -> "CachedTeacher":
        self.device = torch.device(device)
        return self

    def topk(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if "example_index" not in batch:
            from .cache import CacheError

            raise CacheError("a teacher cache needs each batch's example_index: build the training set with "
                             "ParallelDataset(..., with_index=True) and keep remove_unused_columns=False")
        ids, log_probs = self.cache.topk(batch["example_index"].cpu(), batch["labels"].cpu())
        device = batch["labels"].device
        return ids.to(device, non_blocking=True), log_probs.to(device, non_blocking=True)

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ids, log_probs = self.topk(batch)
        n, length, _ = ids.shape
        dense = torch.full((n, length, self.cache.vocab_size), float("-inf"), device=ids.device)
        dense.scatter_(-1, ids, log_probs)
        pad = batch["labels"].eq(-100)
        return dense.masked_fill(pad.unsqueeze(-1), 0.0)  # pad rows: finite (uniform), masked out by the loss


class EnsembleWeights(torch.nn.Module):
    """The mixture weights of an ensemble: fixed (a buffer) or learned (softmax of a trained score vector).

    Learned scores are an ``nn.Parameter`` that :class:`distilmt.training.DistilTrainer` attaches to the student
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

    def __init__(self, models: list, weights: list[float] | None = None, learned: bool = False, bf16: bool = False):
        if not models:
            raise ValueError("an ensemble needs at least one teacher")
        self.teachers = [LiveTeacher(m, bf16=bf16) for m in models]
        self.weights = EnsembleWeights(len(models), weights, learned)
        self._label_log_probs: torch.Tensor | None = None

    @classmethod
    def load(cls, directories: list, tokenizer, student=None, weights=None, bf16: bool = False) -> "EnsembleTeacher":
        """The teachers saved in ``directories``, each refused (ModelError naming its directory) unless it shares
        the student's vocabulary. ``weights``: None (uniform), a list of numbers, or 'learned'."""
        from .models.build import check_same_vocabulary, load_seq2seq

        models = []
        for directory in directories:
            model, teacher_tokenizer = load_seq2seq(directory)
            check_same_vocabulary(teacher_tokenizer, tokenizer, model, student, where=f"teacher in {directory}")
            models.append(model)
        learned = weights == "learned"
        return cls(models, None if learned else weights, learned=learned, bf16=bf16)

    @property
    def learned(self) -> bool:
        return self.weights.learned

    def to(self, device: torch.device) -> "EnsembleTeacher":
        for teacher in self.teachers:
            teacher.to(device)
        self.weights.to(device)
        return self

    def logits(self, batch: dict[str, torch.Tensor], temperature: float = 1.0) -> torch.Tensor:
        from .losses import mixture_log_probs

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
        from .losses import mixture_nll, target_mask

        if not self.learned or self._label_log_probs is None:
            return torch.zeros((), device=batch["labels"].device)
        total, _ = mixture_nll(self._label_log_probs, self.weights.log_weights(), target_mask(batch["labels"]))
        self._label_log_probs = None
        return total
