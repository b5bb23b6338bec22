"""Every loss against values computed by hand, and the invariants a distillation loss must keep."""

import math

import pytest
import torch
import torch.nn.functional as F

from distilmt.losses import (
    forward_kl,
    generalized_jsd,
    label_smoothed_cross_entropy,
    normalise,
    reverse_kl,
    skew_kl,
    token_kd_objective,
    total_variation,
)

# One position, two tokens. Teacher p = [0.25, 0.75] (logits [0, ln 3]); student q = [0.5, 0.5].
P, Q = [0.25, 0.75], [0.5, 0.5]
TEACHER = torch.tensor([[[0.0, math.log(3.0)]]])
STUDENT = torch.tensor([[[0.0, 0.0]]])
MASK = torch.tensor([[True]])


def kl(a, b):
    return sum(x * math.log(x / y) for x, y in zip(a, b) if x > 0)


def test_forward_kl_hand_value():
    loss, n = forward_kl(STUDENT, TEACHER, MASK)
    assert n == 1
    assert loss.item() == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5), abs=1e-6)  # 0.130812


def test_reverse_kl_hand_value():
    loss, _ = reverse_kl(STUDENT, TEACHER, MASK)
    assert loss.item() == pytest.approx(0.5 * math.log(2.0) + 0.5 * math.log(0.5 / 0.75), abs=1e-6)  # 0.143841


def test_total_variation_hand_value():
    loss, _ = total_variation(STUDENT, TEACHER, MASK)
    assert loss.item() == pytest.approx(0.25, abs=1e-6)


def test_generalized_jsd_hand_value():
    m = [0.5 * a + 0.5 * b for a, b in zip(P, Q)]  # [0.375, 0.625]
    expected = 0.5 * kl(P, m) + 0.5 * kl(Q, m)  # 0.033822
    loss, _ = generalized_jsd(STUDENT, TEACHER, MASK, beta=0.5)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.033822, abs=1e-5)


def test_skew_kl_hand_value():
    mix = [0.1 * a + 0.9 * b for a, b in zip(P, Q)]  # [0.475, 0.525]
    loss, _ = skew_kl(STUDENT, TEACHER, MASK, alpha=0.1)
    assert loss.item() == pytest.approx(kl(P, mix), abs=1e-6)  # 0.107043


def test_temperature_divides_both_logits():
    # At T = 2, teacher logits [0, ln 9] become [0, ln 3]: the same p as above.
    teacher_t2 = torch.tensor([[[0.0, math.log(9.0)]]])
    loss, _ = forward_kl(STUDENT, teacher_t2, MASK, temperature=2.0)
    assert loss.item() == pytest.approx(kl(P, Q), abs=1e-6)


def test_kd_objective_scales_by_t_squared_and_weights():
    labels = torch.tensor([[1]])
    teacher_t2 = torch.tensor([[[0.0, math.log(9.0)]]])
    out = token_kd_objective(STUDENT, teacher_t2, labels, alpha=0.3, beta=0.7, temperature=2.0)
    assert out["kd"].item() == pytest.approx(4 * kl(P, Q), abs=1e-6)
    assert out["ce"].item() == pytest.approx(math.log(2.0), abs=1e-6)  # -log q(y=1) = ln 2
    assert out["total"].item() == pytest.approx(0.3 * 4 * kl(P, Q) + 0.7 * math.log(2.0), abs=1e-6)
    assert out["n_tokens"].item() == 1


@pytest.mark.parametrize("fn", [forward_kl, reverse_kl, generalized_jsd, skew_kl, total_variation])
def test_zero_for_identical_inputs(fn):
    logits = torch.randn(3, 5, 11)
    mask = torch.ones(3, 5, dtype=torch.bool)
    loss, _ = fn(logits, logits.clone(), mask)
    assert loss.item() == pytest.approx(0.0, abs=1e-5)


def test_forward_kl_equals_torch_kl_div():
    torch.manual_seed(0)
    s, t = torch.randn(4, 7, 13), torch.randn(4, 7, 13)
    mask = torch.ones(4, 7, dtype=torch.bool)
    for temperature in (1.0, 2.5):
        ours, _ = forward_kl(s, t, mask, temperature)
        ref = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1),
                       log_target=True, reduction="sum")
        assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
        rev, _ = reverse_kl(s, t, mask, temperature)
        ref_rev = F.kl_div(F.log_softmax(t / temperature, -1), F.log_softmax(s / temperature, -1),
                           log_target=True, reduction="sum")
        assert rev.item() == pytest.approx(ref_rev.item(), rel=1e-5)


def test_jsd_endpoints_are_the_kls():
    torch.manual_seed(1)
    s, t = torch.randn(2, 3, 9), torch.randn(2, 3, 9)
    mask = torch.ones(2, 3, dtype=torch.bool)
    assert generalized_jsd(s, t, mask, beta=0.0)[0].item() == pytest.approx(forward_kl(s, t, mask)[0].item())
    assert generalized_jsd(s, t, mask, beta=1.0)[0].item() == pytest.approx(reverse_kl(s, t, mask)[0].item())
    # And the interior is continuous towards the limits of beta * KL-like behaviour: small but non-zero.
    inner = generalized_jsd(s, t, mask, beta=0.5)[0].item()
    assert 0 < inner < min(forward_kl(s, t, mask)[0].item(), reverse_kl(s, t, mask)[0].item())


def test_skew_kl_at_zero_is_forward_kl():
    torch.manual_seed(2)
    s, t = torch.randn(2, 3, 9), torch.randn(2, 3, 9)
    mask = torch.ones(2, 3, dtype=torch.bool)
    assert skew_kl(s, t, mask, alpha=0.0)[0].item() == pytest.approx(forward_kl(s, t, mask)[0].item())


def test_label_smoothed_ce_matches_torch():
    torch.manual_seed(3)
    logits = torch.randn(2, 4, 10)
    labels = torch.tensor([[1, 2, 3, -100], [4, -100, -100, -100]])
    for eps in (0.0, 0.1):
        ours, n = label_smoothed_cross_entropy(logits, labels, eps)
        ref = F.cross_entropy(logits.view(-1, 10), labels.view(-1), ignore_index=-100, label_smoothing=eps,
                              reduction="sum")
        assert n.item() == 4
        assert ours.item() == pytest.approx(ref.item(), rel=1e-5)


def test_padded_positions_change_nothing():
    torch.manual_seed(4)
    s, t = torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    labels = torch.tensor([[1, 2, 3, -100, -100, -100], [1, 2, 3, 4, 5, -100]])
    base = token_kd_objective(s, t, labels, alpha=0.5, beta=0.5, temperature=2.0, label_smoothing=0.1)
    s2, t2 = s.clone(), t.clone()
    pad = labels.eq(-100)
    s2[pad] = torch.randn(int(pad.sum()), 8) * 50  # garbage at pads
    t2[pad] = torch.randn(int(pad.sum()), 8) * 50
    other = token_kd_objective(s2, t2, labels, alpha=0.5, beta=0.5, temperature=2.0, label_smoothing=0.1)
    for key in ("kd", "ce", "total", "n_tokens"):
        assert other[key].item() == pytest.approx(base[key].item(), rel=1e-6)


def test_all_pad_batch_gives_zero_not_nan():
    s, t = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    labels = torch.full((2, 3), -100)
    out = token_kd_objective(s, t, labels, alpha=0.5, beta=0.5, temperature=2.0, label_smoothing=0.1)
    loss = normalise(out["total"], out["n_tokens"])
    assert out["n_tokens"].item() == 0
    assert loss.item() == 0.0 and not torch.isnan(loss)


def test_t_squared_keeps_gradient_magnitude():
    torch.manual_seed(5)
    s0, t = torch.randn(1, 16, 32), torch.randn(1, 16, 32)
    mask = torch.ones(1, 16, dtype=torch.bool)
    norms, raw = {}, {}
    for temperature in (8.0, 16.0):
        s = s0.clone().requires_grad_(True)
        kl_sum, _ = forward_kl(s, t, mask, temperature)
        (kl_sum * temperature**2).backward()
        norms[temperature] = s.grad.norm().item()
        s = s0.clone().requires_grad_(True)
        forward_kl(s, t, mask, temperature)[0].backward()
        raw[temperature] = s.grad.norm().item()
    assert norms[16.0] / norms[8.0] == pytest.approx(1.0, abs=0.1)  # scaled: T-independent
    assert raw[8.0] / raw[16.0] == pytest.approx(4.0, rel=0.1)  # unscaled: shrinks as 1/T^2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl", "jsd", "skew_kl", "tvd"])
def test_gradients_finite_at_extreme_logits(dtype, name):
    from distilmt.losses import DIVERGENCES

    s = (torch.tensor([[[1e4, -1e4, 0.0], [-1e4, 1e4, 3.0]]], dtype=dtype)).requires_grad_(True)
    t = torch.tensor([[[-1e4, 1e4, 0.0], [1e4, -1e4, -3.0]]], dtype=dtype)
    mask = torch.ones(1, 2, dtype=torch.bool)
    loss, _ = DIVERGENCES[name](s, t, mask, temperature=2.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


def test_generalized_jsd_matches_trl():
    trl = pytest.importorskip("trl", reason="TRL not installed: independent cross-check skipped")
    try:
        from trl import GKDTrainer
    except ImportError:  # TRL >= 1.x keeps GKD under trl.experimental
        from trl.experimental.gkd import GKDTrainer

    torch.manual_seed(6)
    s, t = torch.randn(2, 5, 17), torch.randn(2, 5, 17)
    labels = torch.randint(0, 17, (2, 5))
    for beta in (0.1, 0.5, 0.9):
        ref = GKDTrainer.generalized_jsd_loss(s, t, labels=labels, beta=beta, temperature=1.0, reduction="sum")
        ours, _ = generalized_jsd(s, t, torch.ones(2, 5, dtype=torch.bool), beta=beta)
        assert ours.item() == pytest.approx(ref.item(), rel=1e-4), trl.__version__


# -- a teacher given by its top k (the teacher cache) -------------------------------------------------------
# Teacher p = [0.5, 0.3, 0.2]; the cache keeps the top 2 (ids 0, 1); the student q is uniform over 3 tokens.
TOPK_IDS = torch.tensor([[[0, 1]]])
TOPK_LOGP = torch.tensor([[[math.log(0.5), math.log(0.3)]]])
UNIFORM3 = torch.zeros(1, 1, 3)


def test_sparse_forward_kl_hand_value_renormalises_the_top_k():
    from distilmt.losses import sparse_forward_kl

    # T = 1: the top 2 renormalised are [0.625, 0.375] (the tail 0.2 is dropped).
    loss, n = sparse_forward_kl(UNIFORM3, TOPK_IDS, TOPK_LOGP, MASK)
    assert n == 1
    assert loss.item() == pytest.approx(0.625 * math.log(0.625 * 3) + 0.375 * math.log(0.375 * 3), abs=1e-6)
    # T = 2: p_i^(1/2) / sum_j p_j^(1/2) = [0.56351, 0.43649]; the uniform student stays uniform.
    a, b = math.sqrt(0.5), math.sqrt(0.3)
    pa, pb = a / (a + b), b / (a + b)
    loss_t2, _ = sparse_forward_kl(UNIFORM3, TOPK_IDS, TOPK_LOGP, MASK, temperature=2.0)
    assert pa == pytest.approx(0.56351, abs=1e-5)
    assert loss_t2.item() == pytest.approx(pa * math.log(pa * 3) + pb * math.log(pb * 3), abs=1e-6)


def test_sparse_forward_kl_equals_dense_forms_and_full_kl_at_k_equal_vocab():
    from distilmt.losses import sparse_forward_kl

    torch.manual_seed(7)
    s, t = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    labels = torch.tensor([[1, 2, 3, -100, -100], [1, 2, 3, 4, 5]])
    mask = labels.ne(-100)
    log_p = torch.log_softmax(t, -1)
    for temperature in (1.0, 2.0):
        full_values, full_ids = log_p.topk(11, dim=-1)
        sparse, _ = sparse_forward_kl(s, full_ids, full_values, mask, temperature)
        assert sparse.item() == pytest.approx(forward_kl(s, t, mask, temperature)[0].item(), rel=1e-5)
        values, ids = log_p.topk(4, dim=-1)
        dense = torch.full_like(t, float("-inf")).scatter(-1, ids, values)
        sparse4, _ = sparse_forward_kl(s, ids, values, mask, temperature)
        assert sparse4.item() == pytest.approx(forward_kl(s, dense, mask, temperature)[0].item(), rel=1e-5)
        kd = token_kd_objective(s, None, labels, alpha=0.5, beta=0.5, temperature=temperature,
                                teacher_topk=(ids, values))
        assert kd["kd"].item() == pytest.approx(temperature**2 * sparse4.item(), rel=1e-6)


def test_top_k_teacher_pads_ignored_gradients_finite_and_which_divergences_stay_finite():
    from distilmt.losses import DIVERGENCES, sparse_forward_kl

    torch.manual_seed(8)
    s = torch.randn(2, 4, 9, requires_grad=True)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    values, ids = torch.log_softmax(torch.randn(2, 4, 9), -1).topk(3, dim=-1)
    values = values.masked_fill(~mask.unsqueeze(-1), 0.0)  # pad rows as CachedTeacher gives them
    loss, n = sparse_forward_kl(s, ids, values, mask, 2.0)
    loss.backward()
    assert n == 6 and torch.isfinite(loss) and torch.isfinite(s.grad).all()
    assert s.grad[0, 2:].abs().max() == 0
    # A dense top-k teacher (-inf off the top k): p = 0 terms add exactly 0, no NaN in value or gradient.
    dense = torch.full((2, 4, 9), float("-inf")).scatter(-1, ids, values)
    for name, fn in DIVERGENCES.items():
        s.grad = None
        value, _ = fn(s, dense, mask, temperature=2.0)
        if name == "reverse_kl":  # KL(student || teacher) is infinite where the teacher has p = 0
            assert value.item() == float("inf")
            continue
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(s.grad).all(), name


def test_sparse_forward_kl_gradient_equals_autograd_through_the_dense_form():
    from distilmt.losses import sparse_forward_kl

    torch.manual_seed(9)
    s0 = torch.randn(3, 5, 12)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[0, 3:] = False
    values, ids = torch.log_softmax(torch.randn(3, 5, 12), -1).topk(4, dim=-1)
    values, ids = values.masked_fill(~mask.unsqueeze(-1), 0.0), ids.masked_fill(~mask.unsqueeze(-1), 0)
    dense = torch.full((3, 5, 12), float("-inf")).scatter(-1, ids, values)
    for temperature in (1.0, 3.0):
        s_sparse, s_dense = s0.clone().requires_grad_(True), s0.clone().requires_grad_(True)
        (2.0 * sparse_forward_kl(s_sparse, ids, values, mask, temperature)[0]).backward()
        (2.0 * forward_kl(s_dense, dense, mask, temperature)[0]).backward()
        torch.testing.assert_close(s_sparse.grad, s_dense.grad, rtol=1e-5, atol=1e-7)
        assert s_sparse.grad[0, 3:].abs().max() == 0
    # bf16 student logits (autocast) get a bf16 gradient; a second backward through the graph is refused.
    s = s0.to(torch.bfloat16).requires_grad_(True)
    loss, _ = sparse_forward_kl(s, ids, values, mask, 2.0)
    loss.backward(retain_graph=True)
    assert s.grad.dtype == torch.bfloat16 and torch.isfinite(s.grad.float()).all()
    with pytest.raises(RuntimeError, match="twice"):
        loss.backward()


# -- the dense forward KL (live teacher): a custom autograd Function against the plain formula ----------------
def plain_forward_kl(s, t, mask, temperature):
    """The previous implementation, autograd through every op: the reference for value and gradient."""
    log_p = torch.log_softmax(t.float() / temperature, -1)
    log_q = torch.log_softmax(s.float() / temperature, -1)
    p = log_p.exp()
    terms = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(-1)
    return terms.masked_fill(~mask, 0.0).sum()


PAD_LABELS = torch.tensor([[1, 2, 3, -100, -100], [1, 2, 3, 4, 5], [7, -100, -100, -100, -100]])


def test_forward_kl_equals_previous_formula_and_kl_div_with_padding():
    torch.manual_seed(10)
    s, t = torch.randn(3, 5, 17) * 2, torch.randn(3, 5, 17) * 2
    mask = PAD_LABELS.ne(-100)
    for temperature in (1.0, 2.0):
        ours, n = forward_kl(s, t, mask, temperature)
        ref = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1), log_target=True,
                       reduction="none").sum(-1)[mask].sum()
        assert n.item() == 9
        assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
        assert ours.item() == pytest.approx(plain_forward_kl(s, t, mask, temperature).item(), rel=1e-5)


def test_forward_kl_gradcheck_float64():
    torch.manual_seed(11)
    s = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 3, 5, dtype=torch.float64)
    t[0, 1, 2] = float("-inf")  # a zero-probability teacher token
    mask = torch.tensor([[True, True, False], [True, False, False]])
    for temperature in (1.0, 2.0):
        assert torch.autograd.gradcheck(lambda x: forward_kl(x, t, mask, temperature)[0], (s,))


def test_forward_kl_gradient_equals_autograd_through_the_plain_formula():
    torch.manual_seed(12)
    s0, t = torch.randn(3, 5, 17) * 2, torch.randn(3, 5, 17) * 2
    t[1, 2, :5] = float("-inf")
    mask = PAD_LABELS.ne(-100)
    for temperature in (1.0, 2.5):
        ours, ref = s0.clone().requires_grad_(True), s0.clone().requires_grad_(True)
        (3.0 * forward_kl(ours, t, mask, temperature)[0]).backward()
        (3.0 * plain_forward_kl(ref, t, mask, temperature)).backward()
        torch.testing.assert_close(ours.grad, ref.grad, rtol=1e-5, atol=1e-7)
        # (q - p) / T per real position, exactly 0 at pads.
        q, p = torch.softmax(s0 / temperature, -1), torch.softmax(t / temperature, -1)
        torch.testing.assert_close(ours.grad, 3.0 * (q - p) / temperature * mask.unsqueeze(-1), rtol=1e-5,
                                   atol=1e-7)
        assert ours.grad[~mask].abs().max() == 0


def test_forward_kl_backward_twice_with_retained_graph_and_no_teacher_gradient():
    torch.manual_seed(13)
    s, t = torch.randn(2, 4, 9, requires_grad=True), torch.randn(2, 4, 9, requires_grad=True)
    mask = torch.ones(2, 4, dtype=torch.bool)
    loss, _ = forward_kl(s, t, mask, 2.0)
    loss.backward(retain_graph=True)  # the saved buffers must survive a kept graph
    first = s.grad.clone()
    loss.backward()  # this one may reuse them in place
    torch.testing.assert_close(s.grad, 2 * first)
    assert t.grad is None


def test_forward_kl_bf16_inputs_give_finite_fp32_loss_and_bf16_gradient():
    torch.manual_seed(14)
    s0, t = torch.randn(3, 5, 17) * 2, torch.randn(3, 5, 17) * 2
    mask = PAD_LABELS.ne(-100)
    s = s0.to(torch.bfloat16).requires_grad_(True)
    loss, _ = forward_kl(s, t.to(torch.bfloat16), mask, 2.0)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert s.grad.dtype == torch.bfloat16 and torch.isfinite(s.grad.float()).all()
    ref = plain_forward_kl(s0.to(torch.bfloat16), t.to(torch.bfloat16), mask, 2.0)  # same rounded inputs
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)


def test_forward_kl_teacher_minus_inf_entries_add_exactly_zero():
    torch.manual_seed(15)
    s = torch.randn(2, 3, 8, requires_grad=True)
    finite = torch.randn(2, 3, 4)
    t = torch.cat([finite, torch.full((2, 3, 4), float("-inf"))], -1)  # half the vocabulary has p = 0
    mask = torch.tensor([[True, True, False], [True, True, True]])
    loss, _ = forward_kl(s, t, mask, 2.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
    # By hand: sum over the 4 finite entries of p (log p - log q), q over all 8.
    log_p = torch.log_softmax(finite / 2.0, -1)
    log_q = torch.log_softmax(s.detach() / 2.0, -1)[..., :4]
    expected = (log_p.exp() * (log_p - log_q)).sum(-1)[mask].sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_forward_kl_all_pad_batch_gives_zero_not_nan():
    s, t = torch.randn(2, 3, 5, requires_grad=True), torch.randn(2, 3, 5)
    loss, n = forward_kl(s, t, torch.zeros(2, 3, dtype=torch.bool), 2.0)
    value = normalise(loss, n)
    value.backward()
    assert n.item() == 0 and value.item() == 0.0 and not torch.isnan(value)
    assert s.grad.abs().max() == 0


def test_dense_and_sparse_forward_kl_are_accurate_for_near_uniform_distributions():
    # Row KLs of ~1e-3 next to log(vocab) ~ 6: no per-row log-normaliser is rounded on its own, so fp32 stays
    # within 2e-6 of fp64 (the previous log_softmax form is off by ~1e-5 on such rows).
    from distilmt.losses import sparse_forward_kl

    torch.manual_seed(16)
    s, t = torch.randn(4, 25, 500) * 0.1, torch.randn(4, 25, 500) * 0.1
    mask = torch.ones(4, 25, dtype=torch.bool)
    log_p, log_q = torch.log_softmax(t.double() / 2, -1), torch.log_softmax(s.double() / 2, -1)
    ref = (log_p.exp() * (log_p - log_q)).sum()
    values, ids = torch.log_softmax(t, -1).topk(500, dim=-1)
    assert forward_kl(s, t, mask, 2.0)[0].item() == pytest.approx(ref.item(), rel=2e-6)
    assert sparse_forward_kl(s, ids, values, mask, 2.0)[0].item() == pytest.approx(ref.item(), rel=2e-6)


# -- hidden-state and attention distillation (issue 6, methods 3 and 4) -----------------------------------------

from distilmt.losses import (
    attention_kl,
    attention_mse,
    group_heads,
    hidden_state_cosine,
    hidden_state_mse,
    match_heads,
    repeat_heads,
)


def test_hidden_state_mse_hand_value_and_padding():
    s = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, -9.0]]])
    t = torch.tensor([[[1.0, 0.0], [3.0, 3.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True, False]])
    loss, n = hidden_state_mse(s, t, mask)
    assert n == 2 and loss.item() == pytest.approx((0 + 4) / 2 + (0 + 1) / 2)  # mean over width, summed: 2.5
    # whatever sits at the padded position changes nothing; identical inputs give 0
    s2 = s.clone()
    s2[0, 2] = torch.tensor([1e6, float("nan")])
    assert hidden_state_mse(s2, t, mask)[0].item() == pytest.approx(2.5)
    assert hidden_state_mse(t, t, torch.ones(1, 3, dtype=torch.bool))[0].item() == 0.0


def test_hidden_state_cosine_hand_values():
    s = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]]])
    t = torch.tensor([[[0.0, 1.0], [2.0, 2.0], [-1.0, 0.0]]])
    loss, n = hidden_state_cosine(s, t, torch.ones(1, 3, dtype=torch.bool))
    assert n == 3 and loss.item() == pytest.approx(1.0 + 0.0 + 2.0, abs=1e-6)  # orthogonal, parallel, opposite
    assert hidden_state_cosine(s, 5 * s, torch.ones(1, 3, dtype=torch.bool))[0].item() == pytest.approx(0, abs=1e-6)


def test_hidden_state_losses_have_finite_gradients_at_zero_and_huge_vectors():
    s = torch.tensor([[[0.0, 0.0], [1e4, -1e4]]], requires_grad=True)
    t = torch.tensor([[[1.0, 2.0], [0.0, 0.0]]])
    for loss in (hidden_state_mse, hidden_state_cosine):
        s.grad = None
        loss(s, t, torch.ones(1, 2, dtype=torch.bool))[0].backward()
        assert torch.isfinite(s.grad).all()


def test_group_and_repeat_heads():
    attn = torch.arange(4.0).view(1, 4, 1, 1).expand(1, 4, 1, 2)  # head h holds h everywhere
    assert group_heads(attn, 2)[0, :, 0, 0].tolist() == [0.5, 2.5]  # heads (0, 1) and (2, 3) averaged
    assert group_heads(attn, 1)[0, :, 0, 0].tolist() == [1.5]
    assert repeat_heads(attn[:, :2], 4)[0, :, 0, 0].tolist() == [0.0, 0.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="not a multiple"):
        group_heads(attn, 3)
    student, teacher = match_heads(attn[:, :2], attn, "average")
    assert teacher.shape[1] == 2 and torch.equal(student, attn[:, :2])
    student, teacher = match_heads(attn[:, :2], attn, "repeat")
    assert student.shape[1] == 4 and torch.equal(teacher, attn)
    # averaging keeps rows distributions
    probs = torch.softmax(torch.randn(2, 4, 3, 5), -1)
    torch.testing.assert_close(group_heads(probs, 2).sum(-1), torch.ones(2, 2, 3))


def _one_query(student_row, teacher_row):
    return torch.tensor([[[student_row]]]), torch.tensor([[[teacher_row]]])  # [batch 1, head 1, query 1, keys]


def test_attention_kl_and_mse_hand_values():
    s, t = _one_query([0.25, 0.75, 0.0], [0.5, 0.5, 0.0])  # the third key is padding: 0 on both sides
    mask = torch.tensor([[True]])
    loss, n = attention_kl(s, t, mask)
    assert n == 1 and loss.item() == pytest.approx(0.5 * math.log(2.0) + 0.5 * math.log(2 / 3), abs=1e-6)  # 0.143841
    ref = F.kl_div(torch.tensor([0.25, 0.75]).log(), torch.tensor([0.5, 0.5]), reduction="sum")
    assert loss.item() == pytest.approx(ref.item(), abs=1e-6)
    assert attention_mse(s, t, mask)[0].item() == pytest.approx(0.25**2 + 0.25**2)  # summed over keys: 0.125
    # more padded keys (0 on both sides) change neither
    s4, t4 = _one_query([0.25, 0.75, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0, 0.0])
    assert attention_kl(s4, t4, mask)[0].item() == pytest.approx(loss.item())
    assert attention_mse(s4, t4, mask)[0].item() == pytest.approx(0.125)


def test_attention_losses_average_heads_ignore_padded_queries_and_vanish_on_identical_maps():
    torch.manual_seed(0)
    t = torch.softmax(torch.randn(2, 3, 4, 5), -1)
    s = torch.softmax(torch.randn(2, 3, 4, 5), -1)
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    for loss in (attention_kl, attention_mse):
        assert loss(t, t, mask)[0].item() == pytest.approx(0.0, abs=1e-6)
        value, n = loss(s, t, mask)
        assert n == 5
        # the same as the per-head losses averaged over heads
        per_head = sum(loss(s[:, h:h + 1], t[:, h:h + 1], mask)[0] for h in range(3)) / 3
        assert value.item() == pytest.approx(per_head.item(), rel=1e-6)
        garbage = s.clone()
        garbage[1, :, 2:] = torch.rand(3, 2, 5)  # padded query rows of the second sentence
        assert loss(garbage, t, mask)[0].item() == pytest.approx(value.item(), rel=1e-6)


def test_attention_kl_gradient_is_finite_where_the_student_gives_zero():
    logits = torch.tensor([[[[0.0, -1e4, 0.0]]]], requires_grad=True)  # softmax underflows to 0 at key 1
    teacher = torch.tensor([[[[0.4, 0.2, 0.4]]]])
    loss, _ = attention_kl(torch.softmax(logits, -1), teacher, torch.tensor([[True]]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    for dtype in (torch.float32, torch.bfloat16):
        s = torch.softmax(torch.randn(1, 2, 3, 4) * 30, -1).to(dtype).requires_grad_(True)
        t = torch.softmax(torch.randn(1, 2, 3, 4), -1).to(dtype)
        for fn in (attention_kl, attention_mse):
            s.grad = None
            fn(s, t, torch.ones(1, 3, dtype=torch.bool))[0].backward()
            assert torch.isfinite(s.grad.float()).all()


# -- ensembles, on-policy divergences, mutual learning (issue 6, methods 5-7) ------------------------------------

def test_mixture_hand_value():
    from distilmt.losses import mixture_log_probs

    # Teacher A p = [0.25, 0.75], teacher B p = [0.5, 0.5]; weights [0.2, 0.8] -> [0.45, 0.55].
    a, b = TEACHER, STUDENT
    mixed = mixture_log_probs([a, b], torch.tensor([0.2, 0.8]))
    assert mixed.exp().flatten().tolist() == pytest.approx([0.2 * 0.25 + 0.8 * 0.5, 0.2 * 0.75 + 0.8 * 0.5])
    # At T = 2 each teacher is softened first: A^(1/2) renormalised = [1, sqrt 3] / (1 + sqrt 3).
    soft_a = [1 / (1 + math.sqrt(3)), math.sqrt(3) / (1 + math.sqrt(3))]
    mixed_t = mixture_log_probs([a, b], torch.tensor([0.5, 0.5]), temperature=2.0)
    assert mixed_t.exp().flatten().tolist() == pytest.approx([0.5 * soft_a[0] + 0.25, 0.5 * soft_a[1] + 0.25])


def test_mixture_of_identical_teachers_is_the_teacher_and_keeps_zeros():
    from distilmt.losses import mixture_log_probs

    z = torch.randn(2, 3, 7)
    z[0, 0, 2] = float("-inf")
    for t in (1.0, 2.0):
        mixed = mixture_log_probs([z, z.clone()], torch.tensor([0.3, 0.7]), temperature=t)
        assert torch.allclose(mixed, torch.log_softmax(z / t, -1), atol=1e-6, equal_nan=True)
        assert mixed[0, 0, 2] == float("-inf")
    with pytest.raises(ValueError, match="2 teachers but 3 weights"):
        mixture_log_probs([z, z], torch.tensor([0.2, 0.3, 0.5]))


def test_mixture_nll_hand_value_padding_and_gradient():
    from distilmt.losses import mixture_nll

    # Reference token probabilities: teacher A 0.75, teacher B 0.5; weights softmax([0, 0]) = [0.5, 0.5].
    label_lp = torch.log(torch.tensor([[[0.75, 0.9]], [[0.5, 0.1]]]))  # [K=2, B=1, L=2]
    scores = torch.zeros(2, requires_grad=True)
    total, n = mixture_nll(label_lp, torch.log_softmax(scores, 0), torch.tensor([[True, False]]))
    assert float(total.detach()) == pytest.approx(-math.log(0.625)) and int(n) == 1  # the padded position adds nothing
    total.backward()
    assert scores.grad[0] < 0 < scores.grad[1]  # the better teacher's weight grows
    zero, n0 = mixture_nll(label_lp, torch.log(torch.tensor([0.5, 0.5])), torch.zeros(1, 2, dtype=torch.bool))
    assert float(zero) == 0 and int(n0) == 0


@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl", "jsd", "skew_kl", "tvd"])
def test_divergence_sum_dispatches_and_is_zero_for_identical(name):
    from distilmt.losses import divergence_sum

    z = torch.randn(2, 3, 5)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    zero, n = divergence_sum(name, z, z.clone(), mask, temperature=2.0)
    assert float(zero) == pytest.approx(0.0, abs=1e-6) and int(n) == 3
    value, _ = divergence_sum(name, STUDENT, TEACHER, MASK, beta=0.5)
    expected = {"forward_kl": kl(P, Q), "reverse_kl": kl(Q, P), "tvd": 0.25,
                "jsd": 0.5 * kl(P, [0.375, 0.625]) + 0.5 * kl(Q, [0.375, 0.625]),
                "skew_kl": kl(P, [0.375, 0.625])}[name]
    assert float(value) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="unknown divergence"):
        divergence_sum("kl", z, z, mask)


def test_mutual_kl_is_forward_kl_with_the_peer_detached():
    from distilmt.losses import mutual_kl

    mine = STUDENT.clone().requires_grad_(True)
    peer = TEACHER.clone().requires_grad_(True)
    value, n = mutual_kl(mine, peer, MASK)
    assert float(value.detach()) == pytest.approx(kl(P, Q)) and int(n) == 1
    value.backward()
    assert peer.grad is None and mine.grad is not None
    padded = torch.cat([STUDENT, torch.randn(1, 1, 2)], 1), torch.cat([TEACHER, torch.randn(1, 1, 2)], 1)
    assert float(mutual_kl(*padded, torch.tensor([[True, False]]))[0]) == pytest.approx(kl(P, Q))


# -- token_kd_objective with each divergence (distill.divergence) ----------------------------------------------

def _softmax(logits, t):
    exps = [math.exp(z / t) for z in logits]
    return [e / sum(exps) for e in exps]


def _mix(a, b, w):
    return [w * x + (1 - w) * y for x, y in zip(a, b)]


# Two positions, three tokens; the second position is padding (label -100) with logits that would count if unmasked.
_T_LOGITS = [0.0, math.log(3.0), -1.0]
_S_LOGITS = [0.5, 0.0, 0.2]
_KD_TEACHER = torch.tensor([[_T_LOGITS, [5.0, -5.0, 0.0]]])
_KD_STUDENT = torch.tensor([[_S_LOGITS, [-4.0, 4.0, 1.0]]])
_KD_LABELS = torch.tensor([[1, -100]])


def _hand_divergence(name, p, q, b):
    if name == "forward_kl":
        return kl(p, q)
    if name == "reverse_kl":
        return kl(q, p)
    if name == "jsd":
        m = _mix(p, q, b)
        return b * kl(p, m) + (1 - b) * kl(q, m)
    if name == "skew_kl":
        return kl(p, _mix(p, q, b))
    return 0.5 * sum(abs(x - y) for x, y in zip(p, q))


@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl", "jsd", "skew_kl", "tvd"])
def test_token_kd_objective_uses_the_chosen_divergence(name):
    t, alpha, beta, b = 2.0, 0.7, 0.4, 0.3
    p, q = _softmax(_T_LOGITS, t), _softmax(_S_LOGITS, t)
    kd = _hand_divergence(name, p, q, b) * t**2
    ce = -math.log(_softmax(_S_LOGITS, 1.0)[1])
    terms = token_kd_objective(_KD_STUDENT, _KD_TEACHER, _KD_LABELS, alpha=alpha, beta=beta, temperature=t,
                               divergence=name, divergence_beta=b)
    assert terms["n_tokens"] == 1
    assert terms["kd"].item() == pytest.approx(kd, abs=1e-6)
    assert terms["ce"].item() == pytest.approx(ce, abs=1e-6)
    assert terms["total"].item() == pytest.approx(alpha * kd + beta * ce, abs=1e-6)


def test_token_kd_objective_default_divergence_is_todays_forward_kl():
    today = token_kd_objective(_KD_STUDENT, _KD_TEACHER, _KD_LABELS, alpha=0.5, beta=0.5, temperature=2.0)
    chosen = token_kd_objective(_KD_STUDENT, _KD_TEACHER, _KD_LABELS, alpha=0.5, beta=0.5, temperature=2.0,
                                divergence="forward_kl")
    assert torch.equal(today["total"], chosen["total"])


@pytest.mark.parametrize("name", ["jsd", "skew_kl", "tvd"])
def test_divergences_on_a_truncated_teacher_with_minus_inf_are_finite(name):
    # A teacher cache's dense logits: log-probabilities at the top k, -inf elsewhere (teacher p = [0.25, 0, 0.75]).
    teacher = torch.tensor([[[math.log(0.25), float("-inf"), math.log(0.75)]]])
    student = torch.tensor([[_S_LOGITS]], requires_grad=True)
    t, b = 2.0, 0.5
    p = _softmax([math.log(0.25), -math.inf, math.log(0.75)], t)
    q = _softmax(_S_LOGITS, t)
    terms = token_kd_objective(student, teacher, torch.tensor([[2]]), alpha=1.0, beta=0.0, temperature=t,
                               divergence=name, divergence_beta=b)
    assert terms["kd"].item() == pytest.approx(_hand_divergence(name, p, q, b) * t**2, abs=1e-6)
    terms["total"].backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


def test_token_kd_objective_refuses_a_top_k_signal_for_other_divergences():
    ids, logp = torch.tensor([[[0, 2]]]), torch.tensor([[[math.log(0.25), math.log(0.75)]]])
    with pytest.raises(ValueError, match="only forward_kl"):
        token_kd_objective(STUDENT.new_zeros(1, 1, 3), None, torch.tensor([[1]]), alpha=1.0, beta=0.0,
                           temperature=1.0, teacher_topk=(ids, logp), divergence="jsd")
    with pytest.raises(ValueError, match="unknown divergence 'kl'"):
        token_kd_objective(_KD_STUDENT, _KD_TEACHER, _KD_LABELS, alpha=1.0, beta=0.0, temperature=1.0,
                           divergence="kl")
