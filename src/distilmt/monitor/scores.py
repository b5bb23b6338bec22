"""The monitor's numbers: text similarity, normalised KL, laziness, collapse, trend, sample choice."""

from __future__ import annotations

import difflib
import math

import torch

from distilmt.data.languages import source_ids
from distilmt.data.prompt import CausalCollator, TranslationPrompt
from distilmt.data.text import repeated_trigrams
from distilmt.losses import IGNORE_INDEX, forward_kl
from distilmt.models.generation import decoder_start, evaluating, max_positions, model_device

TEXT_WEIGHT = 0.6
KL_WEIGHT = 0.4
GREEN_BELOW = 0.30
YELLOW_BELOW = 0.60
TREND_EPSILON = 0.05  # a change in mean laziness smaller than this between first and last epoch is "flat"
LOW_LOSS = 1.5  # nats/token: a training loss below this counts as "low" for the comments


MAX_SOURCE_TOKENS = 256


def encode(tokenizer, sources: list[str], device, limit: int = MAX_SOURCE_TOKENS) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` of ``sources`` (with the tokenizer's language setup, padded, cut at
    ``limit`` tokens) on ``device``."""
    ids = source_ids(tokenizer, sources, truncation=True, max_length=limit)
    enc = tokenizer.pad({"input_ids": ids}, return_tensors="pt")
    return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}


def text_similarity(a: str, b: str) -> float:
    """difflib ``SequenceMatcher(None, a, b, autojunk=False).ratio()`` on characters, in [0, 1].

    Two empty strings are identical (1.0). ``autojunk`` is off because its popularity heuristic
    treats frequent characters (spaces, vowels) of strings over 200 characters as junk.
    """
    if not a and not b:
        return 1.0
    return float(difflib.SequenceMatcher(None, a, b, autojunk=False).ratio())


def normalised_kl(kl_nats_per_token: float, vocab_size: int) -> float:
    """``KL / log(V)`` clipped to [0, 1]: 0 = the teacher's prediction, 1 = a uniform guess or worse.

    A NaN KL (a student that produced NaN logits) is as bad as it gets: 1.0.
    """
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be at least 2 to normalise a KL, got {vocab_size}")
    if kl_nats_per_token is None or math.isnan(kl_nats_per_token):
        return 1.0
    return float(min(1.0, max(0.0, kl_nats_per_token / math.log(vocab_size))))


def laziness(similarity: float, kl_norm: float | None) -> float:
    """``0.6 * (1 - similarity) + 0.4 * kl_norm``, in [0, 1].

    Without a KL (``kl_norm=None``: teacher and student do not share a vocabulary) the text term alone
    is used: ``1 - similarity``.
    """
    s = min(1.0, max(0.0, float(similarity)))
    if kl_norm is None:
        return 1.0 - s
    k = min(1.0, max(0.0, float(kl_norm)))
    return TEXT_WEIGHT * (1.0 - s) + KL_WEIGHT * k


def repetition(text: str) -> float:
    """Share of repeated word trigrams, ``1 - distinct trigrams / trigrams`` (0 for fewer than 3 words): the
    measure evaluation's collapse check uses (:func:`~distilmt.data.text.repeated_trigrams`). Not repeated words:
    a healthy genealogy ("the son of A, and the son of B, ...") repeats half its words but few of its trigrams."""
    rate = repeated_trigrams(text)
    return 0.0 if rate is None else rate


def _mean_pairwise_similarity(texts: list[str]) -> float:
    pairs = [(a, b) for i, a in enumerate(texts) for b in texts[i + 1:]]
    return sum(text_similarity(a, b) for a, b in pairs) / len(pairs)


def degenerate(texts: list[str]) -> bool:
    """True when outputs are degenerate by themselves, whatever a teacher writes: empty everywhere, (nearly) one
    text for three or more different inputs (mean pairwise similarity >= 0.9), or mostly repeated words (> 0.5 on average)."""
    if not texts:
        return False
    if all(not t.strip() for t in texts):
        return True
    if len(texts) >= 3 and _mean_pairwise_similarity(texts) >= 0.9:
        return True
    return sum(map(repetition, texts)) / len(texts) > 0.5


def output_problem(text: str) -> str | None:
    """``empty`` or ``looping`` (more than half of the words repeat) for one output, None when it looks healthy."""
    if not text.strip():
        return "empty"
    return "looping" if repetition(text) > 0.5 else None


def collapse_suspected(students: list[str], teachers: list[str]) -> bool:
    """True when the student's outputs look degenerate — by themselves (:func:`degenerate`: a student that
    imitates a looping teacher perfectly is still collapsed), or next to a teacher whose outputs are not.

    Relative to the teacher: (nearly) the same text for different inputs (mean pairwise similarity of the
    student's outputs >= 0.8 and at least 0.3 above the teacher's); or mostly repeated words (> 0.5 on average
    and 0.25 above the teacher's).
    """
    if not students:
        return False
    if degenerate(students):
        return True
    if all(not s.strip() for s in students) and any(t.strip() for t in teachers):
        return True
    if len(students) >= 2 and len(teachers) == len(students):
        s_sim, t_sim = _mean_pairwise_similarity(students), _mean_pairwise_similarity(teachers)
        if s_sim >= 0.8 and s_sim >= t_sim + 0.3:
            return True
    rep_s = sum(map(repetition, students)) / len(students)
    rep_t = sum(map(repetition, teachers)) / max(len(teachers), 1)
    return rep_s > 0.5 and rep_s > rep_t + 0.25


def mean(values) -> float | None:
    """The mean of the values that are not None (None when there are none)."""
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def trend_of(first: float | None, last: float | None, epsilon: float = TREND_EPSILON) -> str:
    """improving / flat / worse from the first to the last mean laziness (lower is better)."""
    if first is None or last is None:
        return "unknown"
    if last < first - epsilon:
        return "improving"
    if last > first + epsilon:
        return "worse"
    return "flat"


def per_row_kl(s_logits: torch.Tensor, t_logits: torch.Tensor, mask: torch.Tensor) -> list[float]:
    """Mean per-token ``KL(teacher || student)`` of each row over its ``mask``ed positions (0 for a row without any)."""
    kls = []
    for row in range(mask.shape[0]):
        total, count = forward_kl(s_logits[row : row + 1], t_logits[row : row + 1], mask[row : row + 1])
        kls.append(float(total / count.clamp(min=1)))
    return kls


def batch_kl(teacher, student, tokenizer, sources: list[str], targets: list[str]) -> tuple[list[float], int]:
    """Mean per-token ``KL(teacher || student)`` at T=1 for each pair, teacher-forced on ``targets``,
    and the vocabulary size the KL was taken over.

    Both models read the same source and target token ids (each with its own decoder start token); the
    logits are compared in fp32 over the shared vocabulary (the smaller of the two logit widths, for
    models whose embeddings are padded to a multiple), with padded target positions ignored.
    """
    # cut at what both position tables hold (a 128-position teacher indexed past its table otherwise)
    limit = min(MAX_SOURCE_TOKENS, max_positions(teacher, tokenizer), max_positions(student, tokenizer))
    labels = tokenizer(text_target=targets, return_tensors="pt", padding=True, truncation=True, max_length=limit)
    ids, mask = labels["input_ids"], labels["attention_mask"].bool()
    logits = []
    for model in (teacher, student):
        device = model_device(model)
        with evaluating(model):
            enc = encode(tokenizer, sources, device, limit)
            start = torch.full((ids.shape[0], 1), decoder_start(model), dtype=ids.dtype)
            decoder_input_ids = torch.cat([start, ids[:, :-1]], dim=1).to(device)
            out = model(**enc, decoder_input_ids=decoder_input_ids, use_cache=False)
        logits.append(out.logits.float())
    device = logits[1].device
    vocab = min(logits[0].shape[-1], logits[1].shape[-1])
    t_logits, s_logits = logits[0][..., :vocab].to(device), logits[1][..., :vocab]
    mask = mask.to(device)
    return per_row_kl(s_logits, t_logits, mask), int(vocab)


def causal_batch_kl(teacher, student, prompt: TranslationPrompt, sources: list[str], targets: list[str],
                    vocab: int) -> tuple[list[float], int]:
    """:func:`batch_kl` for two causal LMs of one tokenizer: both read ``prompt`` + target + eos, and the KL is
    taken where the logits predict a target token (the prompt and the padding ignored), over the first ``vocab``
    logits (the real vocabulary both share; their embedding matrices may be padded to other sizes)."""
    limit = min(max_positions(teacher, prompt.tokenizer), max_positions(student, prompt.tokenizer))
    examples = [{key: ids[:limit] for key, ids in prompt.example(s, t).items()} for s, t in zip(sources, targets)]
    batch = CausalCollator(prompt.pad_token_id)(examples)
    logits = []
    for model in (teacher, student):
        device = model_device(model)
        with evaluating(model):
            out = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                        use_cache=False)
        logits.append(out.logits[:, :-1, :vocab].float())  # position t predicts token t + 1
    device = logits[1].device
    mask = (batch["labels"][:, 1:] != IGNORE_INDEX).to(device)
    t_logits, s_logits = logits[0].to(device), logits[1]
    return per_row_kl(s_logits, t_logits, mask), int(vocab)


def sample_kl(teacher, student, tokenizer, source: str, target_text: str) -> float:
    """Mean per-token ``KL(teacher || student)`` in nats at T=1 on one sentence pair, teacher-forced
    on ``target_text`` (the monitor passes the teacher's own greedy translation: the question is how
    far the student is from imitating the teacher on what the teacher would say; it also needs no
    reference). Computed under ``torch.no_grad`` in eval mode; both models' modes are restored."""
    return batch_kl(teacher, student, tokenizer, [source], [target_text])[0][0]


def select_samples(pairs: list[tuple[str, str]], n: int, min_words: int = 6,
                   max_words: int = 30) -> list[tuple[str, str]]:
    """``n`` (source, reference) pairs spread evenly over ``pairs``, preferring mid-length sources."""
    fitting = [p for p in pairs if min_words <= len(p[0].split()) <= max_words] or list(pairs)
    if len(fitting) <= n:
        return list(fitting)
    step = len(fitting) / n
    return [fitting[int(i * step)] for i in range(n)]
