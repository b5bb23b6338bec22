"""Read a user's parallel corpus (tsv, two plain files, jsonl) and write our own TSV files atomically.

Every problem with a user's file is a :class:`CorpusError`: one sentence naming the file, the line
when there is one, and what to do. Sentences come back stripped, with whitespace runs collapsed to
one space, so they never contain a tab or a newline.
"""

from __future__ import annotations

import codecs
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ..errors import CorpusError
from ..rundir import atomic_open

logger = logging.getLogger(__name__)

FORMATS = ("tsv", "plain", "jsonl")
_SKIP_HINT = "(fix the line or set data.skip_bad_lines=true to skip bad lines)"
_ACCEPTED = ("a .tsv file (source<TAB>target), a .jsonl file (one JSON object per line), or the prefix "
             "of two aligned files PREFIX.{src} and PREFIX.{tgt}")

Pair = tuple[str, str]


def normalize(text: str) -> str:
    """The text stripped, with every run of whitespace collapsed to one space."""
    return " ".join(text.split())


class _BadLines:
    """Raises on a bad line, or counts it when bad lines are to be skipped."""

    def __init__(self, skip: bool, quiet: bool = False):
        self.skip = skip
        self.quiet = quiet
        self.count = 0

    def __call__(self, path: Path, line: int, problem: str) -> None:
        if not self.skip:
            raise CorpusError(f"{path}:{line}: {problem} {_SKIP_HINT}")
        self.count += 1
        if self.count <= 3 and not self.quiet:
            logger.warning("skipping %s:%d: %s", path, line, problem)


def _lines(path: Path) -> Iterator[tuple[int, str | None, str]]:
    """(line number, text without line ending or None if not UTF-8, problem) for each line of a file."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise CorpusError(f"{path}: file not found; check the path in data.corpus, data.dev_file or "
                          "data.test_file") from None
    except IsADirectoryError:
        raise CorpusError(f"{path}: is a directory; give a corpus file or the prefix of two aligned "
                          "files") from None
    except OSError as exc:
        raise CorpusError(f"{path}: cannot be read ({exc.strerror}); check its permissions") from None
    with handle:
        for number, raw in enumerate(handle, 1):
            raw = raw.rstrip(b"\r\n")
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                yield number, raw.decode("utf-8"), ""
            except UnicodeDecodeError as exc:
                yield number, None, (f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                                     "save the file as UTF-8")


def detect_format(path: str | Path, src_lang: str = "en", tgt_lang: str = "hu") -> str:
    """The format of a corpus path by its name: tsv, jsonl, or plain for a prefix of two files."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".tsv":
        return "tsv"
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    if any(file.exists() for file in _plain_files(path, src_lang, tgt_lang)):
        return "plain"  # when only one of the two exists, reading it says which one is missing
    if not path.exists():
        raise CorpusError(f"{path}: no such file, and no {path}.{src_lang} / {path}.{tgt_lang} pair; "
                          f"give {_ACCEPTED.format(src=src_lang, tgt=tgt_lang)}")
    raise CorpusError(f"{path}: cannot tell the corpus format from the name; give "
                      f"{_ACCEPTED.format(src=src_lang, tgt=tgt_lang)}, or set data.format")


def _plain_files(prefix: Path, src_lang: str, tgt_lang: str) -> tuple[Path, Path]:
    return prefix.with_name(f"{prefix.name}.{src_lang}"), prefix.with_name(f"{prefix.name}.{tgt_lang}")


def read_parallel(path: str | Path, fmt: str = "auto", src_lang: str = "en", tgt_lang: str = "hu",
                  src_field: str = "", tgt_field: str = "", skip_bad_lines: bool = False) -> tuple[list[Pair], int]:
    """Sentence pairs (source, target) from a corpus, and the number of bad lines skipped.

    ``fmt`` is tsv, plain (``path`` is a prefix: PREFIX.src_lang and PREFIX.tgt_lang aligned by line),
    jsonl (fields ``src_field``/``tgt_field``, default the language codes) or auto (by the name).
    Bad lines raise a :class:`CorpusError` unless ``skip_bad_lines``; blank lines are ignored.
    """
    bad = _BadLines(skip_bad_lines)
    pairs = list(iter_parallel(path, fmt, src_lang, tgt_lang, src_field, tgt_field, bad))
    return pairs, bad.count


def iter_parallel(path: str | Path, fmt: str = "auto", src_lang: str = "en", tgt_lang: str = "hu",
                  src_field: str = "", tgt_field: str = "", bad: _BadLines | None = None) -> Iterator[Pair]:
    """The pairs of :func:`read_parallel` one at a time, never the whole corpus in memory; the bad lines skipped are
    counted in ``bad`` (a :class:`BadLines`; default: raise on the first). A corpus without any pair is a
    :class:`CorpusError` once the end is reached."""
    path = Path(path)
    if fmt == "auto":
        fmt = detect_format(path, src_lang, tgt_lang)
    bad = bad if bad is not None else _BadLines(False)
    if fmt == "tsv":
        pairs = _read_tsv(path, bad)
    elif fmt == "plain":
        pairs = _read_plain(path, src_lang, tgt_lang, bad)
        path = _plain_files(path, src_lang, tgt_lang)[0]
    elif fmt == "jsonl":
        pairs = _read_jsonl(path, src_field or src_lang, tgt_field or tgt_lang, bad)
    else:
        raise CorpusError(f"{path}: unknown corpus format '{fmt}'; use one of auto, {', '.join(FORMATS)}")
    found = 0
    for pair in pairs:
        found += 1
        yield pair
    if not found:
        skipped = f" ({bad.count} bad lines skipped)" if bad.count else ""
        raise CorpusError(f"{path}: no sentence pairs found{skipped}; check that this is the corpus you meant")


BadLines = _BadLines


def _content_lines(path: Path, bad: _BadLines):
    """(number, line) of each non-blank line; undecodable lines are reported to ``bad``."""
    for number, line, problem in _lines(path):
        if line is None:
            bad(path, number, problem)
        elif line.strip():
            yield number, line


def _read_tsv(path: Path, bad: _BadLines) -> Iterator[Pair]:
    for number, line in _content_lines(path, bad):
        parts = line.split("\t")
        if len(parts) != 2:
            bad(path, number, f"expected source<TAB>target, found {len(parts) - 1} tabs")
            continue
        src, tgt = normalize(parts[0]), normalize(parts[1])
        if not src or not tgt:
            bad(path, number, f"the {'source' if not src else 'target'} side is empty")
            continue
        yield src, tgt


def _read_plain(prefix: Path, src_lang: str, tgt_lang: str, bad: _BadLines) -> Iterator[Pair]:
    files = _plain_files(prefix, src_lang, tgt_lang)
    for file in files:
        if not file.is_file():
            hint = ""
            if prefix.suffix in (f".{src_lang}", f".{tgt_lang}"):
                hint = f" (give the prefix {prefix.with_suffix('')}, without the language suffix)"
            raise CorpusError(f"{file}: file not found; a plain corpus is PREFIX.{src_lang} and "
                              f"PREFIX.{tgt_lang} aligned by line{hint}")
    # read side by side; the line counts compared at the end leave out each file's trailing blank lines, so a blank
    # line at the end of one file is not a misalignment
    sides = [_lines(file) for file in files]
    counts, trailing = [0, 0], [0, 0]

    def count(k: int, row) -> None:
        counts[k] += 1
        trailing[k] = trailing[k] + 1 if row[1] is not None and not row[1].strip() else 0

    while True:
        rows = [next(side, None) for side in sides]
        for k, row in enumerate(rows):
            if row is not None:
                count(k, row)
        if rows[0] is None or rows[1] is None:
            for k in (0, 1):
                for row in sides[k] if rows[k] is not None else ():
                    count(k, row)
            lines = [counts[k] - trailing[k] for k in (0, 1)]
            if lines[0] != lines[1]:
                raise CorpusError(f"{files[0]} has {lines[0]} lines but {files[1]} has {lines[1]}; "
                                  "the two files of a plain corpus must be aligned line by line")
            return
        (number, src_line, src_problem), (_, tgt_line, tgt_problem) = rows
        if src_line is None or tgt_line is None:
            bad(files[0] if src_line is None else files[1], number, src_problem or tgt_problem)
            continue
        src, tgt = normalize(src_line), normalize(tgt_line)
        if not src and not tgt:
            continue
        if not src or not tgt:
            empty, other = (files[0], files[1]) if not src else (files[1], files[0])
            bad(empty, number, f"empty line, but line {number} of {other.name} is not")
            continue
        yield src, tgt


def _read_jsonl(path: Path, src_field: str, tgt_field: str, bad: _BadLines) -> Iterator[Pair]:
    for number, line in _content_lines(path, bad):
        if number == 1 and line.lstrip().startswith("["):
            raise CorpusError(f"{path}: is a JSON array; write one JSON object per line (JSONL) instead")
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            bad(path, number, f"not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(record, dict):
            bad(path, number, "not a JSON object")
            continue
        texts = []
        for field in (src_field, tgt_field):
            if field not in record:
                found = ", ".join(sorted(map(str, record))) or "none"
                bad(path, number, f"no '{field}' field (found: {found}; set data.src_field / data.tgt_field "
                                  "to the field names)")
                break
            value = record[field]
            if not isinstance(value, str) or not normalize(value):
                bad(path, number, f"field '{field}' is {'empty' if isinstance(value, str) else 'not a string'}")
                break
            texts.append(normalize(value))
        else:
            yield texts[0], texts[1]


def tsv_line(row: Sequence[str], path: str | Path) -> str:
    """One row of texts as a tab-separated line; a text holding a tab or line break cannot be (ValueError)."""
    for text in row:
        if any(char in text for char in "\t\r\n"):
            raise ValueError(f"cannot write {text!r} to {path}: it contains a tab or line break")
    return "\t".join(row) + "\n"


def write_tsv(rows: Iterable[Sequence[str]], path: str | Path) -> None:
    """Write rows of texts as tab-separated lines, atomically: the file is whole or not there."""
    with atomic_open(path) as handle:
        for row in rows:
            handle.write(tsv_line(row, path))


def read_tsv(path: str | Path, columns: int = 2) -> list[tuple[str, ...]]:
    """Rows of a TSV file written by :func:`write_tsv`, each with exactly ``columns`` texts."""
    path = Path(path)
    rows = []
    for number, line, problem in _lines(path):
        parts = line.split("\t") if line is not None else []
        if len(parts) != columns:
            found = problem or f"{len(parts)} columns instead of {columns}"
            raise CorpusError(f"{path}:{number}: {found}; this file is damaged or not written by distilmt, "
                              "delete it and prepare the data again")
        rows.append(tuple(parts))
    return rows
