"""Distillation losses as pure functions of tensors.

Every function takes per-position logits ``[batch, length, vocab]`` (or anything whose softmax is the
distribution: log-probabilities work, and ``-inf`` marks tokens with zero probability) and a boolean
``mask`` ``[batch, length]`` of real (non-pad) target positions, and returns ``(loss_sum, n_tokens)``:
the loss summed over masked positions and how many there were. The caller normalises exactly once, by
the global number of target tokens (summed over gradient-accumulation micro-batches and processes), so
micro-batching never changes the result. All maths is done in fp32 whatever the input dtype.

Temperature ``T`` divides both teacher and student logits before the softmax. The conventional ``T**2``
factor that keeps gradient magnitudes comparable across temperatures is applied by
:func:`token_kd_objective`, not hidden inside the divergences, so each divergence is exactly the quantity
its name says.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100

LossSum = tuple[torch.Tensor, torch.Tensor]


def target_mask(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Boolean mask of real target positions."""
    return labels.ne(ignore_index)


def _log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.log_softmax(logits.float() / temperature, dim=-1)


def _masked_sum(per_position: torch.Tensor, mask: torch.Tensor) -> LossSum:
    mask = mask.to(per_position.device)
    total = per_position.masked_fill(~mask, 0.0).sum()
    return total, mask.sum()


def _kl_from_log_probs(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per position, summed over the vocabulary; terms with p = 0 contribute exactly 0."""
    p = log_p.exp()
    terms = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p))
    return terms.sum(-1)


def label_smoothed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, epsilon: float = 0.0,
                                 ignore_index: int = IGNORE_INDEX) -> LossSum:
    """Cross-entropy with the reference, smoothed as ``torch.nn.functional.cross_entropy(label_smoothing=eps)``:

    ``(1 - eps) * -log q(y) + eps * mean_v(-log q(v))`` per real target position.
    """
    mask = target_mask(labels, ignore_index)
    log_q = torch.log_softmax(logits.float(), dim=-1)
    safe = labels.masked_fill(~mask, 0).unsqueeze(-1)
    nll = -log_q.gather(-1, safe).squeeze(-1)
    smooth = -log_q.mean(-1)
    return _masked_sum((1.0 - epsilon) * nll + epsilon * smooth, mask)


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
               temperature: float = 1.0) -> LossSum:
    """KL(p_teacher^T || p_student^T) summed over masked positions (the classic Hinton KD divergence).

    Per position ``sum_v p_v (log p_v - log q_v)`` with ``p = softmax(teacher / T)``, ``q = softmax(student / T)``,
    in fp32 (fp64 for fp64 inputs); entries with p = 0 (teacher logit ``-inf``) add exactly 0. The teacher gets
    no gradient; the student's is ``(q - p) / T`` times the incoming gradient, so 0 at masked positions. Equal
    to ``kl_div(log q, log p, log_target=True)`` summed over real positions, computed by :class:`_DenseForwardKL`
    with three ``[batch, length, vocab]`` buffers (two saved) instead of autograd's chain of temporaries.
    Student logits must be finite (a network's are); every teacher row needs one finite logit (pad rows too).
    """
    return _masked_sum(_DenseForwardKL.apply(student_logits, teacher_logits, temperature), mask)


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """fp32 for half, bf16 and fp32 inputs; fp64 when an input is fp64 (gradcheck)."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _shifted(logits: torch.Tensor, temperature: float, dtype: torch.dtype) -> torch.Tensor:
    """``(logits - row max) / T`` in a fresh ``dtype`` buffer (the cast happens inside the subtraction); every
    entry is <= 0 and the row's largest is 0, so its exponentials sum to at least 1. Never writes the input."""
    shifted = torch.sub(logits, logits.amax(-1, keepdim=True).to(dtype))
    return shifted if temperature == 1 else shifted.div_(temperature)


def _graph_is_kept() -> bool:
    """Whether the running backward keeps the graph (``retain_graph=True``, gradcheck): saved tensors must then
    survive it. Private torch API (AOTAutograd uses it for the same purpose); assume kept if it is missing."""
    query = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", None)
    return True if query is None else bool(query())


class _DenseForwardKL(torch.autograd.Function):
    """Per position ``sum_v p_v (log p_v - log q_v)``; gradient ``(q - p) / T`` w.r.t. the student logits.

    With ``a = (t - max t) / T``, ``c = (s - max s) / T``, ``P = exp(a)``, ``Q = exp(c)`` and their row sums
    ``Z_t``, ``Z_s``: ``p = P / Z_t``, ``log p = a - log Z_t``, ``log q = c - log Z_s``, and as ``sum_v p_v = 1``,
    ``KL = sum_v P_v (a_v - c_v) / Z_t + log Z_s - log Z_t``. Three ``[batch, length, vocab]`` buffers (a, P, c;
    a is reused for ``(a - c) * P``, c becomes Q in place), two exponentials, no log over the vocabulary. A
    ``-inf`` teacher logit is clamped to the dtype's lowest finite value: P = 0 there and ``a - c`` is finite,
    so the entry adds exactly 0, no NaN. Saves the unnormalised Q and P and the two row sums; backward writes
    ``(Q / Z_s - P / Z_t) * g / T`` into Q in place (into a copy when the graph is kept for another backward).
    """

    @staticmethod
    def forward(ctx, student_logits, teacher_logits, temperature):
        dtype = _compute_dtype(student_logits, teacher_logits)
        a = _shifted(teacher_logits, temperature, dtype).clamp_(min=torch.finfo(dtype).min)
        p_un = a.exp()
        z_t = p_un.sum(-1)
        c = _shifted(student_logits, temperature, dtype)
        cross = a.sub_(c).mul_(p_un).sum(-1)  # sum_v P_v (a_v - c_v)
        del a
        q_un = c.exp_()
        z_s = q_un.sum(-1)
        kl = cross.div_(z_t).add_(z_s.div(z_t).log_())
        ctx.save_for_backward(q_un, p_un, z_s, z_t)
        ctx.temperature, ctx.dtype = temperature, student_logits.dtype
        return kl

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_kl):
        q_un, p_un, z_s, z_t = ctx.saved_tensors
        scale = grad_kl.to(q_un.dtype) / ctx.temperature
        grad = q_un.clone() if _graph_is_kept() else q_un
        grad.mul_((scale / z_s).unsqueeze(-1)).addcmul_(p_un, (-scale / z_t).unsqueeze(-1))
        return grad.to(ctx.dtype), None, None


def sparse_forward_kl(student_logits: torch.Tensor, topk_ids: torch.Tensor, topk_log_probs: torch.Tensor,
                      mask: torch.Tensor, temperature: float = 1.0) -> LossSum:
    """KL(p_teacher^T || p_student^T) with the teacher given only by its top k: ids and log-probs at T = 1.

    ``topk_ids`` and ``topk_log_probs`` are ``[batch, length, k]``. The teacher at temperature T is the top k
    renormalised, tail dropped: ``p_i^T = p_i^(1/T) / sum_j p_j^(1/T)`` over the k ids (``softmax(log p / T)``),
    0 elsewhere; the student is its full ``softmax(s / T)`` over the vocabulary, read at the k ids. This equals
    :func:`forward_kl` with teacher logits ``log p`` at the ids and ``-inf`` elsewhere, and with k = vocabulary
    size the live teacher's forward KL, without building a ``[batch, length, vocab]`` teacher tensor.
    Every row needs at least one finite log-prob (pad rows too: they are masked, but must not be NaN).
    """
    return _masked_sum(_TopKForwardKL.apply(student_logits, topk_ids, topk_log_probs.detach(), temperature), mask)


class _TopKForwardKL(torch.autograd.Function):
    """Per position ``sum_i p_i (log p_i - log q_i)``, q = softmax(s / T) read at the k ids; the gradient is
    ``(sum_i p_i * q - p) / T`` with p scattered over the vocabulary, written into the saved softmax in place:
    one ``[batch, length, vocab]`` buffer instead of the several temporaries autograd would allocate.

    As in :class:`_DenseForwardKL`, with ``a = (log p_topk - max) / T``, ``c = (s - max s) / T`` and
    ``Z_s = sum_v exp(c_v)`` over the vocabulary, ``KL = sum_i p_i (a_i - c_i) + log(Z_s / Z_p)``: no
    ``log Z`` of size ~log(vocab) is rounded on its own, so the value is as accurate as the dense one's.
    """

    @staticmethod
    def forward(ctx, student_logits, topk_ids, topk_log_probs, temperature):
        dtype = _compute_dtype(student_logits, topk_log_probs)
        a = _shifted(topk_log_probs, temperature, dtype).clamp_(min=torch.finfo(dtype).min)
        p = a.exp()
        z_p = p.sum(-1)
        p.div_(z_p.unsqueeze(-1))
        c = _shifted(student_logits, temperature, dtype)
        kl = (p * (a - c.gather(-1, topk_ids))).sum(-1)
        q_un = c.exp_()
        z_s = q_un.sum(-1)
        kl.add_(z_s.div(z_p).log_())
        ctx.save_for_backward(q_un, topk_ids, p, z_s)
        ctx.temperature, ctx.dtype, ctx.used = temperature, student_logits.dtype, False
        return kl

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_kl):
        if ctx.used:
            raise RuntimeError("sparse_forward_kl: backward through the same graph twice is not supported")
        ctx.used = True
        q_un, ids, p, z_s = ctx.saved_tensors
        scale = (grad_kl.to(q_un.dtype) / ctx.temperature).unsqueeze(-1)
        grad = q_un.mul_(p.sum(-1, keepdim=True) * scale / z_s.unsqueeze(-1))  # the softmax, in place
        grad.scatter_add_(-1, ids, -(p * scale))
        return grad.to(ctx.dtype), None, None, None


def reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
               temperature: float = 1.0) -> LossSum:
    """KL(p_student^T || p_teacher^T): mode-seeking."""
    log_p = _log_probs(teacher_logits, temperature)
    log_q = _log_probs(student_logits, temperature)
    return _masked_sum(_kl_from_log_probs(log_q, log_p), mask)


def generalized_jsd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
                    beta: float = 0.5, temperature: float = 1.0) -> LossSum:
    """Generalised Jensen-Shannon divergence as in GKD (Agarwal et al. 2024) and TRL:

    ``m = beta * p_teacher + (1 - beta) * p_student``;
    ``JSD_beta = beta * KL(p_teacher || m) + (1 - beta) * KL(p_student || m)``.
    The formula itself vanishes at beta = 0 and beta = 1; following TRL, those endpoints are defined as the
    forward KL(p_teacher || p_student) (beta = 0) and the reverse KL(p_student || p_teacher) (beta = 1).
    """
    log_p = _log_probs(teacher_logits, temperature)
    log_q = _log_probs(student_logits, temperature)
    if beta == 0:
        return _masked_sum(_kl_from_log_probs(log_p, log_q), mask)
    if beta == 1:
        return _masked_sum(_kl_from_log_probs(log_q, log_p), mask)
    log_m = torch.logsumexp(torch.stack([log_p + torch.log(torch.tensor(beta)),
                                         log_q + torch.log(torch.tensor(1.0 - beta))]), dim=0)
    jsd = beta * _kl_from_log_probs(log_p, log_m) + (1 - beta) * _kl_from_log_probs(log_q, log_m)
    return _masked_sum(jsd, mask)


def skew_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
            alpha: float = 0.1, temperature: float = 1.0) -> LossSum:
    """Alpha-skew KL from DistiLLM (Ko et al. 2024): ``KL(p_teacher || alpha * p_teacher + (1 - alpha) * p_student)``.

    ``alpha = 0`` is the forward KL; larger alpha bounds the loss where the student gives a teacher token ~0.
    """
    log_p = _log_probs(teacher_logits, temperature)
    log_q = _log_probs(student_logits, temperature)
    if alpha == 0:
        return _masked_sum(_kl_from_log_probs(log_p, log_q), mask)
    log_mix = torch.logsumexp(torch.stack([log_p + torch.log(torch.tensor(alpha)),
                                           log_q + torch.log(torch.tensor(1.0 - alpha))]), dim=0)
    return _masked_sum(_kl_from_log_probs(log_p, log_mix), mask)


def total_variation(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
                    temperature: float = 1.0) -> LossSum:
    """Total variation distance ``0.5 * sum_v |p_teacher(v) - p_student(v)|`` per position."""
    p = _log_probs(teacher_logits, temperature).exp()
    q = _log_probs(student_logits, temperature).exp()
    return _masked_sum(0.5 * (p - q).abs().sum(-1), mask)


DIVERGENCES = {
    "forward_kl": forward_kl,
    "reverse_kl": reverse_kl,
    "jsd": generalized_jsd,
    "skew_kl": skew_kl,
    "tvd": total_variation,
}


def token_kd_objective(student_logits: torch.Tensor, teacher_logits: torch.Tensor | None, labels: torch.Tensor,
                       alpha: float, beta: float, temperature: float, label_smoothing: float = 0.0,
                       ignore_index: int = IGNORE_INDEX,
                       teacher_topk: tuple[torch.Tensor, torch.Tensor] | None = None,
                       divergence: str = "forward_kl", divergence_beta: float = 0.5) -> dict[str, torch.Tensor]:
    """Token-level KD: ``alpha * T^2 * D(p_t^T, p_s^T) + beta * CE_ls(student, reference)``, as sums.

    ``D`` is the divergence called ``divergence`` in :data:`DIVERGENCES` (default ``forward_kl``, i.e.
    ``KL(p_t^T || p_s^T)``); ``divergence_beta`` is the JSD's beta and the skew KL's alpha (see
    :func:`divergence_sum`). Returns the summed terms ``{"kd", "ce", "total", "n_tokens"}``; divide by the global
    target-token count. With ``teacher_logits=None`` (no teacher) the KD term is 0 and only ``beta * CE`` remains.
    ``teacher_topk=(ids, log_probs)`` (a teacher cache) takes the place of ``teacher_logits`` for the forward KL
    only: the KL is then :func:`sparse_forward_kl` on the k stored entries. Any other divergence needs the dense
    ``teacher_logits`` (for a cache: ``-inf`` outside the top k, see :meth:`CachedTeacher.logits`).
    """
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence '{divergence}'; choose one of {', '.join(DIVERGENCES)}")
    ce, n_tokens = label_smoothed_cross_entropy(student_logits, labels, label_smoothing, ignore_index)
    if teacher_topk is not None and alpha != 0:
        if divergence != "forward_kl":
            raise ValueError(f"a top-k teacher signal supports only forward_kl, not {divergence}: pass the dense "
                             "teacher_logits (CachedTeacher.logits) instead")
        kl, _ = sparse_forward_kl(student_logits, teacher_topk[0], teacher_topk[1],
                                  target_mask(labels, ignore_index), temperature)
        kd = kl * temperature**2
    elif teacher_logits is None or alpha == 0:
        kd = torch.zeros((), device=ce.device)
    elif divergence == "forward_kl":
        kl, _ = forward_kl(student_logits, teacher_logits, target_mask(labels, ignore_index), temperature)
        kd = kl * temperature**2
    else:
        div, _ = divergence_sum(divergence, student_logits, teacher_logits, target_mask(labels, ignore_index),
                                temperature, beta=divergence_beta)
        kd = div * temperature**2
    total = alpha * kd + beta * ce
    return {"kd": kd, "ce": ce, "total": total, "n_tokens": n_tokens}


def normalise(loss_sum: torch.Tensor, n_tokens: torch.Tensor | int) -> torch.Tensor:
    """Divide a loss sum by a token count; an all-pad batch (count 0) gives 0, not NaN."""
    if torch.is_tensor(n_tokens):
        return loss_sum / n_tokens.clamp(min=1).to(loss_sum.dtype)
    return loss_sum / max(int(n_tokens), 1)


__all__ = [
    "DIVERGENCES", "IGNORE_INDEX", "forward_kl", "generalized_jsd", "label_smoothed_cross_entropy", "normalise",
    "reverse_kl", "skew_kl", "sparse_forward_kl", "target_mask", "token_kd_objective", "total_variation",
]


# -- intermediate-layer distillation (hidden states, attention maps) --------------------------------------------
#
# Same contract as the divergences: ``(loss_sum, n_positions)`` summed over real positions, normalised once by
# the caller. The trainer divides these sums by the global target-token count too (see DistilTrainer), so the
# terms are "per target token" and micro-batch x accumulation equals the full batch. Maths in fp32.


def hidden_state_mse(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, mask: torch.Tensor) -> LossSum:
    """Mean squared error over the width, ``mean_d (h_s - h_t)^2`` per position, summed over masked positions.

    ``student_hidden`` (already projected to the teacher's width by an adapter when widths differ) and
    ``teacher_hidden`` are ``[batch, length, width]``; ``mask`` ``[batch, length]`` marks real positions
    (encoder: the attention mask; decoder: ``labels != -100``).
    """
    per_position = (student_hidden.float() - teacher_hidden.float()).pow(2).mean(-1)
    return _masked_sum(per_position, mask.bool())


def hidden_state_cosine(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, mask: torch.Tensor,
                        eps: float = 1e-8) -> LossSum:
    """Cosine distance ``1 - cos(h_s, h_t)`` per position (0 for parallel vectors, 2 for opposite ones),
    summed over masked positions; insensitive to the scale of either side."""
    cos = torch.nn.functional.cosine_similarity(student_hidden.float(), teacher_hidden.float(), dim=-1, eps=eps)
    return _masked_sum(1.0 - cos, mask.bool())


def group_heads(attention: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Average consecutive groups of heads: ``[batch, H, q, k]`` -> ``[batch, n_heads, q, k]`` (H divisible by
    n_heads); each result row is still a distribution. Used on the teacher when it has more heads."""
    batch, heads, q, k = attention.shape
    if heads % n_heads:
        raise ValueError(f"cannot group {heads} attention heads into {n_heads}: {heads} is not a multiple")
    return attention.reshape(batch, n_heads, heads // n_heads, q, k).mean(2)


def repeat_heads(attention: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Repeat each head ``n_heads / H`` times in place (``[s0, s0, s1, s1]``), so head g of the result faces
    teacher head g: each student head then learns from every teacher head of its group."""
    heads = attention.shape[1]
    if n_heads % heads:
        raise ValueError(f"cannot repeat {heads} attention heads into {n_heads}: {n_heads} is not a multiple")
    return attention.repeat_interleave(n_heads // heads, dim=1)


def match_heads(student_attention: torch.Tensor, teacher_attention: torch.Tensor,
                mode: str = "average") -> tuple[torch.Tensor, torch.Tensor]:
    """Bring student and teacher attention ``[batch, heads, q, k]`` to one head count.

    ``average``: teacher heads averaged in groups down to the student's count (or, if the student has more
    heads, student heads averaged down to the teacher's); ``repeat``: the side with fewer heads is repeated.
    """
    hs, ht = student_attention.shape[1], teacher_attention.shape[1]
    if hs == ht:
        return student_attention, teacher_attention
    if mode == "average":
        return (student_attention, group_heads(teacher_attention, hs)) if ht > hs else (
            group_heads(student_attention, ht), teacher_attention)
    if mode == "repeat":
        return (repeat_heads(student_attention, ht), teacher_attention) if ht > hs else (
            student_attention, repeat_heads(teacher_attention, hs))
    raise ValueError(f"unknown head matching '{mode}'; choose average or repeat")


def attention_kl(student_attention: torch.Tensor, teacher_attention: torch.Tensor, query_mask: torch.Tensor,
                 eps: float = 1e-10) -> LossSum:
    """``KL(a_teacher || a_student)`` over the keys of each query, averaged over heads, summed over masked queries.

    Inputs are attention probabilities ``[batch, heads, q, k]`` with equal head counts (see :func:`match_heads`);
    ``query_mask`` ``[batch, q]`` marks real query positions. Keys the teacher gives probability 0 (padding,
    future positions) contribute exactly 0; the student's probabilities are floored at ``eps`` in the log.
    """
    t = teacher_attention.float()
    log_s = student_attention.float().clamp_min(eps).log()
    terms = torch.where(t > 0, t * (t.clamp_min(eps).log() - log_s), torch.zeros_like(t))
    return _masked_sum(terms.sum(-1).mean(1), query_mask.bool())


def attention_mse(student_attention: torch.Tensor, teacher_attention: torch.Tensor,
                  query_mask: torch.Tensor) -> LossSum:
    """Squared error summed over the keys, ``sum_k (a_s - a_t)^2``, averaged over heads, summed over masked
    queries. Summing (not averaging) over keys keeps padded keys, where both are 0, from diluting it."""
    diff = (student_attention.float() - teacher_attention.float()).pow(2).sum(-1).mean(1)
    return _masked_sum(diff, query_mask.bool())


HIDDEN_LOSSES = {"mse": hidden_state_mse, "cosine": hidden_state_cosine}
ATTENTION_LOSSES = {"kl": attention_kl, "mse": attention_mse}

__all__ += [
    "ATTENTION_LOSSES", "HIDDEN_LOSSES", "attention_kl", "attention_mse", "group_heads", "hidden_state_cosine",
    "hidden_state_mse", "match_heads", "repeat_heads",
]


# -- ensembles, on-policy and mutual distillation (issue 6, methods 5-7) -----------------------------------------


def mixture_log_probs(teacher_logits: list[torch.Tensor] | tuple[torch.Tensor, ...], weights: torch.Tensor,
                      temperature: float = 1.0) -> torch.Tensor:
    """Log of the teachers' mixture in probability space, ``log sum_k w_k softmax(z_k / T)`` ``[batch, length, V]``.

    ``weights`` ``[K]`` are the mixture weights (non-negative, summing to 1: fixed, or a softmax of learned
    scores). The temperature is applied here, once, to each teacher before mixing; a caller that hands the
    result to a divergence that divides by T again must undo that (see :class:`distilmt.teachers.ensemble.EnsembleTeacher`,
    which returns ``T * log p_mix`` so that ``softmax(returned / T) = p_mix``). Computed in fp32 with
    logsumexp, so a token every teacher gives probability 0 stays ``-inf`` and no probability underflows early.
    Gradients flow to ``weights`` (and to the logits, when they have any).
    """
    if len(teacher_logits) != weights.numel():
        raise ValueError(f"{len(teacher_logits)} teachers but {weights.numel()} weights")
    stacked = torch.stack([_log_probs(z, temperature) for z in teacher_logits])  # [K, B, L, V]
    log_w = weights.float().log().view(-1, *([1] * (stacked.dim() - 1)))
    return torch.logsumexp(stacked + log_w, dim=0)


def mixture_nll(label_log_probs: torch.Tensor, log_weights: torch.Tensor, mask: torch.Tensor) -> LossSum:
    """Negative log-likelihood of the reference under the mixture, ``-log sum_k w_k p_k(y)``, summed over masked
    positions.

    ``label_log_probs`` ``[K, batch, length]`` are each teacher's ``log p_k(y_t)`` of the reference token (at
    T = 1), ``log_weights`` ``[K]`` the log mixture weights. This is what learned ensemble weights minimise: the
    weights that make the ensemble the best predictor of the references (it never looks at the student).
    """
    log_w = log_weights.float().view(-1, *([1] * (label_log_probs.dim() - 1)))
    return _masked_sum(-torch.logsumexp(label_log_probs.float() + log_w, dim=0), mask)


def divergence_sum(name: str, student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
                   temperature: float = 1.0, beta: float = 0.5) -> LossSum:
    """The divergence called ``name`` in :data:`DIVERGENCES` (forward_kl, reverse_kl, jsd, skew_kl, tvd), as
    ``(loss_sum, n_tokens)``; ``beta`` is the JSD's beta and the skew KL's alpha (ignored by the others)."""
    if name not in DIVERGENCES:
        raise ValueError(f"unknown divergence '{name}'; choose one of {', '.join(DIVERGENCES)}")
    if name == "jsd":
        return generalized_jsd(student_logits, teacher_logits, mask, beta=beta, temperature=temperature)
    if name == "skew_kl":
        return skew_kl(student_logits, teacher_logits, mask, alpha=beta, temperature=temperature)
    return DIVERGENCES[name](student_logits, teacher_logits, mask, temperature=temperature)


def mutual_kl(student_logits: torch.Tensor, peer_logits: torch.Tensor, mask: torch.Tensor,
              temperature: float = 1.0) -> LossSum:
    """Deep mutual learning's term for one student: ``KL(p_peer^T || p_student^T)`` with the peer detached (the
    peer is a target here; it learns from this student through its own, symmetric term)."""
    return forward_kl(student_logits, peer_logits.detach(), mask, temperature)


__all__ += ["divergence_sum", "mixture_log_probs", "mixture_nll", "mutual_kl"]
