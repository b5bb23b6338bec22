"""Warnings for a corpus whose sides are the same text or whose columns look swapped, on real text."""

from __future__ import annotations

from distilmt.data.languages_check import corpus_warnings, function_word_share


def test_swapped_and_identical_sides_are_warned_about(verse_pairs):
    pairs = verse_pairs[:400]  # (English, Hungarian) verses
    assert corpus_warnings(pairs, "en", "hu", "verses.tsv") == []
    swapped = corpus_warnings([(t, s) for s, t in pairs], "en", "hu", "verses.tsv")
    assert len(swapped) == 1 and "columns swapped" in swapped[0] and "--direction hu-en" in swapped[0]
    same = corpus_warnings([(s, s) for s, _ in pairs], "en", "hu", "verses.tsv")
    assert any("100% of the pairs have the same text" in w for w in same)
    assert corpus_warnings(pairs, "en", "ja", "x.tsv") == []  # a language the table does not know: no guess
    # by hand: "the cat and the dog" has 3 English function words of 5
    assert function_word_share(["the cat and the dog"], "en") == 3 / 5
