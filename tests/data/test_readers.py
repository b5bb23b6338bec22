"""Corpus readers: the three formats, every kind of bad input, and atomic writing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import SHARED_DATA
from distilmt.data.readers import detect_format, read_parallel, read_tsv, write_tsv
from distilmt.errors import CorpusError


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def jsonl(*records) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in records)


# --- happy paths -------------------------------------------------------------------------------

def test_tsv_normalises_whitespace_and_ignores_blank_lines(tmp_path):
    path = write(tmp_path / "c.tsv", "\ufeffHello  world.\tSzia   világ!\r\n\n  Good\u00a0night. \t Jó éjt.\n")
    pairs, skipped = read_parallel(path)
    assert pairs == [("Hello world.", "Szia világ!"), ("Good night.", "Jó éjt.")]
    assert skipped == 0


def test_plain_prefix_reads_two_aligned_files(tmp_path):
    write(tmp_path / "train.en", "A dog runs.\nTwo  cats.\n")
    write(tmp_path / "train.de", "Ein Hund rennt.\nZwei Katzen.\n\n")  # a trailing blank line is tolerated
    pairs, skipped = read_parallel(tmp_path / "train", src_lang="en", tgt_lang="de")
    assert pairs == [("A dog runs.", "Ein Hund rennt."), ("Two cats.", "Zwei Katzen.")]
    assert skipped == 0
    reverse, _ = read_parallel(tmp_path / "train", fmt="plain", src_lang="de", tgt_lang="en")
    assert reverse[0] == ("Ein Hund rennt.", "A dog runs.")


def test_jsonl_uses_language_codes_or_given_fields(tmp_path):
    path = write(tmp_path / "c.jsonl", jsonl({"en": "Yes.", "hu": "Igen.", "id": 1}, "", {"en": "No.", "hu": "Nem."}))
    assert read_parallel(path) == ([("Yes.", "Igen."), ("No.", "Nem.")], 0)
    path = write(tmp_path / "d.json", jsonl({"source": "Yes.\tReally.", "target": "Igen."}))
    pairs, _ = read_parallel(path, src_field="source", tgt_field="target")
    assert pairs == [("Yes. Really.", "Igen.")]  # a tab inside a field never reaches our TSV files


def test_detect_format(tmp_path):
    write(tmp_path / "p.en", "a\n")
    write(tmp_path / "p.hu", "b\n")
    write(tmp_path / "x.txt", "a\tb\n")
    assert detect_format(tmp_path / "c.tsv") == "tsv"
    assert detect_format(tmp_path / "c.jsonl") == "jsonl"
    assert detect_format(tmp_path / "c.JSON") == "jsonl"
    assert detect_format(tmp_path / "p", "en", "hu") == "plain"
    with pytest.raises(CorpusError, match=r"x\.txt.*\.tsv file.*\.jsonl file.*prefix"):
        detect_format(tmp_path / "x.txt")
    with pytest.raises(CorpusError, match=r"nothing.*no such file.*\.tsv file"):
        detect_format(tmp_path / "nothing")


# --- bad lines -----------------------------------------------------------------------------------

BAD_LINES = [
    # (file name, content, line number, words in the message)
    ("c.tsv", "a\tb\nno tab here\nc\td\n", 2, "found 0 tabs"),
    ("c.tsv", "a\tb\nc\td\te\n", 2, "found 2 tabs"),
    ("c.tsv", "a\tb\nc\t  \n", 2, "target side is empty"),
    ("c.tsv", "\tb\n", 1, "source side is empty"),
    ("c.tsv", b"a\tb\nc\t\xe9t\xe9\n", 2, "not valid UTF-8"),
    ("c.jsonl", jsonl({"en": "a", "hu": "b"}, '{"en": "a", "hu": '), 2, "not valid JSON"),
    ("c.jsonl", jsonl({"en": "a", "hu": "b"}, {"src": "a", "hu": "b"}), 2, "no 'en' field (found: hu, src"),
    ("c.jsonl", jsonl({"en": "a", "hu": 3}), 1, "'hu' is not a string"),
    ("c.jsonl", jsonl({"en": "a", "hu": None}), 1, "'hu' is not a string"),
    ("c.jsonl", jsonl({"en": " ", "hu": "b"}), 1, "'en' is empty"),
    ("c.jsonl", jsonl({"en": "a", "hu": "b"}, '"just a string"'), 2, "not a JSON object"),
    ("c.jsonl", b'{"en": "a", "hu": "b"}\n{"en": "\xff", "hu": "b"}\n', 2, "not valid UTF-8"),
]


@pytest.mark.parametrize("name, content, line, words", BAD_LINES)
def test_bad_line_names_file_and_line(tmp_path, name, content, line, words):
    path = write(tmp_path / name, content)
    with pytest.raises(CorpusError) as error:
        read_parallel(path)
    message = str(error.value)
    assert f"{path}:{line}:" in message
    assert words in message
    assert "data.skip_bad_lines=true" in message


@pytest.mark.parametrize("name, content, line, words", BAD_LINES)
def test_skip_bad_lines_skips_and_counts(tmp_path, name, content, line, words):
    good = b"x\ty\n" if name.endswith(".tsv") else b'{"en": "x", "hu": "y"}\n'
    path = write(tmp_path / name, (content if isinstance(content, bytes) else content.encode()) + good)
    pairs, skipped = read_parallel(path, skip_bad_lines=True)
    assert skipped == 1
    assert pairs[-1] == ("x", "y")


@pytest.mark.parametrize("en, hu, bad_file, words", [
    ("a\n\nc\n", "A\nB\nC\n", "p.en", "empty line, but line 2 of p.hu is not"),
    ("a\nb\nc\n", "A\n \nC\n", "p.hu", "empty line, but line 2 of p.en is not"),
    ("a\nb\nc\n", b"A\nB\xc3\nC\n", "p.hu", "not valid UTF-8"),
])
def test_plain_bad_line(tmp_path, en, hu, bad_file, words):
    write(tmp_path / "p.en", en)
    write(tmp_path / "p.hu", hu)
    with pytest.raises(CorpusError) as error:
        read_parallel(tmp_path / "p")
    assert f"{tmp_path / bad_file}:2:" in str(error.value) and words in str(error.value)
    pairs, skipped = read_parallel(tmp_path / "p", skip_bad_lines=True)
    assert pairs == [("a", "A"), ("c", "C")] and skipped == 1


def test_plain_blank_on_both_sides_is_ignored(tmp_path):
    write(tmp_path / "p.en", "a\n\nc\n")
    write(tmp_path / "p.hu", "A\n\nC\n")
    assert read_parallel(tmp_path / "p") == ([("a", "A"), ("c", "C")], 0)


# --- whole-file problems ---------------------------------------------------------------------------

def test_plain_line_count_mismatch_is_never_skippable(tmp_path):
    write(tmp_path / "p.en", "a\nb\nc\n")
    write(tmp_path / "p.hu", "A\nB\n")
    with pytest.raises(CorpusError) as error:
        read_parallel(tmp_path / "p", skip_bad_lines=True)
    message = str(error.value)
    assert str(tmp_path / "p.en") in message and str(tmp_path / "p.hu") in message
    assert "3 lines" in message and "has 2" in message


def test_plain_missing_side_is_named(tmp_path):
    write(tmp_path / "p.en", "a\n")
    with pytest.raises(CorpusError, match=r"p\.hu: file not found"):
        read_parallel(tmp_path / "p")
    with pytest.raises(CorpusError, match=r"give the prefix .*p, without the language suffix"):
        read_parallel(tmp_path / "p.en", fmt="plain")


@pytest.mark.parametrize("name, fmt", [("none.tsv", "auto"), ("none.jsonl", "auto"), ("none", "tsv")])
def test_missing_file(tmp_path, name, fmt):
    with pytest.raises(CorpusError, match=rf"{name}: file not found"):
        read_parallel(tmp_path / name, fmt=fmt)


def test_directory_instead_of_file(tmp_path):
    (tmp_path / "dir.tsv").mkdir()
    with pytest.raises(CorpusError, match=r"dir\.tsv: is a directory"):
        read_parallel(tmp_path / "dir.tsv")


@pytest.mark.parametrize("name, content", [("e.tsv", ""), ("e.tsv", "\n\n"), ("e.jsonl", "")])
def test_empty_file(tmp_path, name, content):
    path = write(tmp_path / name, content)
    with pytest.raises(CorpusError, match=rf"{name}: no sentence pairs found"):
        read_parallel(path)


def test_empty_plain_corpus(tmp_path):
    write(tmp_path / "p.en", "")
    write(tmp_path / "p.hu", "")
    with pytest.raises(CorpusError, match=r"p\.en: no sentence pairs found"):
        read_parallel(tmp_path / "p")


def test_only_bad_lines_reports_how_many_were_skipped(tmp_path):
    path = write(tmp_path / "c.tsv", "no tab\nnor here\n")
    with pytest.raises(CorpusError, match=r"c\.tsv: no sentence pairs found \(2 bad lines skipped\)"):
        read_parallel(path, skip_bad_lines=True)


def test_json_array_is_explained(tmp_path):
    path = write(tmp_path / "c.json", '[\n{"en": "a", "hu": "b"}\n]\n')
    with pytest.raises(CorpusError, match=r"c\.json: is a JSON array; write one JSON object per line"):
        read_parallel(path, skip_bad_lines=True)


def test_unknown_format(tmp_path):
    with pytest.raises(CorpusError, match="unknown corpus format 'csv'"):
        read_parallel(tmp_path / "c.csv", fmt="csv")


# --- our own TSV files ---------------------------------------------------------------------------------

def test_write_and_read_tsv_round_trip(tmp_path):
    rows = [("GEN 1:1", "A sentence.", "Egy mondat."), ("GEN 1:2", "ő", "ű")]
    write_tsv(rows, tmp_path / "sub" / "rows.tsv")
    assert read_tsv(tmp_path / "sub" / "rows.tsv", columns=3) == rows
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["rows.tsv"]


def test_interrupted_write_leaves_previous_file_and_no_temp(tmp_path):
    path = tmp_path / "train.tsv"
    write_tsv([("old", "régi")], path)

    def rows():
        yield ("new", "új")
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of writing

    with pytest.raises(KeyboardInterrupt):
        write_tsv(rows(), path)
    assert read_tsv(path) == [("old", "régi")]
    assert [p.name for p in tmp_path.iterdir()] == ["train.tsv"]


def test_write_tsv_refuses_tabs_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="contains a tab or line break"):
        write_tsv([("a\tb", "c")], tmp_path / "x.tsv")
    assert list(tmp_path.iterdir()) == []


def test_read_tsv_names_damaged_line(tmp_path):
    path = write(tmp_path / "dev.tsv", "a\tb\nc\n")
    with pytest.raises(CorpusError, match=r"dev\.tsv:2: 1 columns instead of 2; .*delete it"):
        read_tsv(path)


# --- real corpora (read from ../shared/data, never copied into the repository) ----------------------------

def shared(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real corpus {path} is not available on this machine")
    return path


def test_real_tatoeba_tsv():
    pairs, skipped = read_parallel(shared("tatoeba-en-hu/pairs.tsv"))
    assert len(pairs) == 28_555 and skipped == 0
    assert all(src and tgt and "\t" not in src + tgt for src, tgt in pairs)


def test_real_multi30k_plain_prefix():
    shared("multi30k/train.en")
    pairs, skipped = read_parallel(SHARED_DATA / "multi30k" / "train", src_lang="en", tgt_lang="de")
    assert len(pairs) == 29_000 and skipped == 0
    assert all(src and tgt for src, tgt in pairs)
