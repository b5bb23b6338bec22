"""Measures of one text that several layers read: the labels' repetition filter and the evaluation's health check."""

from __future__ import annotations


def repeated_trigrams(text: str) -> float | None:
    """``1 - distinct word trigrams / word trigrams`` of one text: 0 when no trigram repeats, near 1 for a
    "the son of the son of the son ..." loop; None for a text of fewer than three words."""
    words = text.split()
    trigrams = list(zip(words, words[1:], words[2:]))
    if not trigrams:
        return None
    return 1 - len(set(trigrams)) / len(trigrams)
