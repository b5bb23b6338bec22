"""Translation quality (sacrebleu BLEU, chrF, TER) and output health (is the model collapsing?)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from sacrebleu.metrics import BLEU, CHRF, TER

from ..data.text import repeated_trigrams

TOKENIZE = "13a"
"""sacrebleu tokenizer for BLEU and TER (the WMT default); Chinese targets use sacrebleu's 'zh'."""

COLLAPSE_MIN_DISTINCT = 0.3
"""Collapsed when fewer than this share of the outputs are distinct strings."""
COLLAPSE_TOP_SHARE = 0.2
"""Collapsed when one output string makes up at least this share of all outputs ..."""
COLLAPSE_TOP_MIN_COUNT = 3
"""... and occurs at least this many times (so two equal outputs in a tiny set are not a collapse)."""
COLLAPSE_MAX_REPETITION = 0.5
"""Collapsed when the repetition rate (see :func:`repetition_rate`) is above this."""


def _metrics(target_lang: str) -> dict:

    chinese = target_lang.lower().startswith("zh")
    return {"bleu": BLEU(tokenize="zh" if chinese else TOKENIZE), "chrf": CHRF(), "ter": TER(asian_support=chinese)}


def quality(hyps: Sequence[str], refs: Sequence[str], target_lang: str = "") -> dict:
    """Corpus-level BLEU, chrF and TER (0-100) with their sacrebleu signature strings (``bleu_signature``, ...)."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} translations but {len(refs)} references; they must pair up one to one")
    out: dict = {}
    for name, metric in _metrics(target_lang).items():
        out[name] = round(float(metric.corpus_score(list(hyps), [list(refs)]).score), 4)
        out[f"{name}_signature"] = str(metric.get_signature())
    return out


def paired_bootstrap(baseline: Sequence[str], system: Sequence[str], refs: Sequence[str], target_lang: str = "",
                     n_samples: int = 1000, seed: int = 12345) -> dict:
    """Is ``system`` really better than ``baseline`` on these references, or is the difference test-set luck?

    Paired bootstrap resampling (Koehn, 2004): draw ``n_samples`` test sets of the same size with replacement,
    score both systems on each (sacrebleu's own sufficient statistics, as its significance module does) and look
    at the differences. Per metric (bleu, chrf): both scores, ``delta`` = system - baseline on the real test set,
    ``ci95`` the 2.5th and 97.5th percentile of the resampled differences, and ``system_better`` the share of
    resamples in which the system scored higher (0.95 or more is the usual bar for "better"), ``system_worse`` the
    share in which it scored lower; resamples where both score the same (identical translations) count as neither.
    """

    n = len(refs)
    if not len(baseline) == len(system) == n or n == 0:
        raise ValueError(f"{len(baseline)} baseline and {len(system)} system translations for {n} "
                         "references; they must pair up one to one (and not be empty)")
    samples = np.random.default_rng(seed).choice(n, size=(n_samples, n), replace=True)
    out: dict = {"test": "paired bootstrap resampling", "n_samples": n_samples, "seed": seed, "sentences": n}
    for name, metric in _metrics(target_lang).items():
        if name == "ter":  # lower is better and slow to resample; BLEU and chrF say enough
            continue
        stats = [np.asarray(metric._extract_corpus_statistics(list(hyps), [list(refs)]), dtype=np.float64)
                 for hyps in (baseline, system)]
        def score(st):
            return metric._compute_score_from_stats(list(st.sum(0))).score
        base, sys_ = float(score(stats[0])), float(score(stats[1]))
        deltas = np.array([score(stats[1][i]) - score(stats[0][i]) for i in samples])
        out[name] = {"baseline": round(base, 4), "system": round(sys_, 4), "delta": round(sys_ - base, 4),
                     "ci95": [round(float(np.percentile(deltas, 2.5)), 4), round(float(np.percentile(deltas, 97.5)), 4)],
                     "system_better": round(float((deltas > 0).mean()), 4),
                     "system_worse": round(float((deltas < 0).mean()), 4)}
    return out


def signatures(target_lang: str = "") -> dict[str, str]:
    """The sacrebleu signatures :func:`quality` reports for this target language."""
    scores = quality(["x"], ["x"], target_lang)  # sacrebleu knows its signature only after one evaluation
    return {key: value for key, value in scores.items() if key.endswith("_signature")}


def repetition_rate(hyps: Sequence[str]) -> float:
    """Mean over outputs with at least one word trigram of ``1 - distinct trigrams / trigrams``.

    0 for outputs that never repeat a trigram; near 1 for "the the the the ..." loops.
    """
    rates = [rate for rate in map(repeated_trigrams, hyps) if rate is not None]
    return sum(rates) / len(rates) if rates else 0.0


def health(hyps: Sequence[str], references: Sequence[str] | None = None,
           sources: Sequence[str] | None = None) -> dict:
    """Signs of mode collapse in a set of translations.

    distinct_ratio: distinct outputs / outputs; top_output_share: share of the most frequent output;
    repetition_rate: see :func:`repetition_rate`; empty_outputs: count of empty translations;
    length_ratio: output words / reference words (corpus level, None without references);
    copy_rate: share of outputs equal to their source (None without sources); collapsed: any of the
    ``COLLAPSE_*`` thresholds crossed.
    """
    n = len(hyps)
    if n == 0:
        raise ValueError("no translations to check")
    texts = [h.strip() for h in hyps]
    top_count = Counter(texts).most_common(1)[0][1]
    out = {
        "distinct_ratio": len(set(texts)) / n,
        "top_output_share": top_count / n,
        "repetition_rate": repetition_rate(texts),
        "empty_outputs": sum(1 for t in texts if not t),
        "length_ratio": None,
        "copy_rate": None,
    }
    if references is not None:
        ref_words = sum(len(r.split()) for r in references)
        out["length_ratio"] = sum(len(t.split()) for t in texts) / ref_words if ref_words else None
    if sources is not None:
        out["copy_rate"] = sum(t == s.strip() for t, s in zip(texts, sources)) / n
    out["collapsed"] = bool(
        out["distinct_ratio"] < COLLAPSE_MIN_DISTINCT
        or (out["top_output_share"] >= COLLAPSE_TOP_SHARE and top_count >= COLLAPSE_TOP_MIN_COUNT)
        or out["repetition_rate"] > COLLAPSE_MAX_REPETITION
    )
    return out
