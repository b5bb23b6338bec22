"""Cheap checks of a parallel corpus against its declared languages: sides that are the same text, or columns that
look swapped (each side reads more like the other language). Warnings, not errors: the heuristics can be wrong."""

from __future__ import annotations

import re
from collections.abc import Sequence

FUNCTION_WORDS = {
    "en": {"the", "and", "of", "to", "is", "in", "that", "it", "was", "for", "with", "you", "he", "not", "a"},
    "hu": {"a", "az", "és", "hogy", "nem", "is", "egy", "van", "meg", "de", "ki", "mert", "már", "ez", "volt"},
    "de": {"der", "die", "und", "das", "ist", "nicht", "ein", "eine", "zu", "den", "mit", "sie", "es", "auf", "ich"},
    "fr": {"le", "la", "et", "les", "des", "est", "un", "une", "que", "pas", "dans", "pour", "il", "je", "du"},
    "es": {"el", "la", "de", "que", "y", "los", "en", "un", "una", "es", "no", "por", "las", "se", "con"},
    "it": {"il", "la", "di", "che", "e", "non", "un", "una", "per", "del", "le", "si", "sono", "con", "mi"},
    "nl": {"de", "het", "een", "en", "van", "is", "niet", "dat", "ik", "je", "op", "te", "zijn", "met", "voor"},
}
"""Frequent function words of a few languages (the ones the shared corpora and the built-in corpus use, and
neighbours). A language outside this table is not checked."""
_WORD = re.compile(r"\w+", re.UNICODE)


def function_word_share(texts: Sequence[str], language: str) -> float:
    """The share of the words of ``texts`` that are function words of ``language`` (0 for an unknown language)."""
    words = FUNCTION_WORDS.get(language.lower().split("_")[0])
    tokens = [w.lower() for text in texts for w in _WORD.findall(text)]
    if not words or not tokens:
        return 0.0
    return sum(t in words for t in tokens) / len(tokens)


def corpus_warnings(pairs: Sequence[tuple[str, str]], source_lang: str, target_lang: str, where: str,
                    sample: int = 2000) -> list[str]:
    """One sentence per problem the first ``sample`` pairs show (the corpus reader passes a uniform sample of the
    whole corpus): most pairs have the same text on both sides, or the source side reads like the target language
    and the target side like the source language."""
    head = list(pairs[:sample])
    if not head:
        return []
    warnings = []
    same = sum(s.strip() == t.strip() for s, t in head) / len(head)
    if same > 0.5:
        warnings.append(f"{where}: {same:.0%} of the pairs have the same text on both sides; check that the two "
                        "columns or files are the two languages")
    sources, targets = [s for s, _ in head], [t for _, t in head]
    src_as_src, src_as_tgt = function_word_share(sources, source_lang), function_word_share(sources, target_lang)
    tgt_as_tgt, tgt_as_src = function_word_share(targets, target_lang), function_word_share(targets, source_lang)
    known = source_lang.split("_")[0] in FUNCTION_WORDS and target_lang.split("_")[0] in FUNCTION_WORDS
    if known and src_as_tgt > 2 * src_as_src + 0.01 and tgt_as_src > 2 * tgt_as_tgt + 0.01:
        warnings.append(f"{where}: the source side reads like '{target_lang}' and the target side like "
                        f"'{source_lang}' (function words); are the columns swapped? Use --direction "
                        f"{target_lang}-{source_lang} or swap them")
    return warnings
