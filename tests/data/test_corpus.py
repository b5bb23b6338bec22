"""Splitting: the built-in Bible corpus, user corpora, and the prepared data directory."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from conftest import SHARED_DATA
from distilmt.config import DataConfig
from distilmt.data import bible, corpus
from distilmt.data.corpus import build_splits, load_splits, prepare_data
from distilmt.data.readers import read_tsv
from distilmt.errors import CorpusError


def sources(pairs):
    return {src for src, _ in pairs}


# --- the built-in Bible corpus -------------------------------------------------------------------

@pytest.fixture(scope="module")
def bible_cache(tmp_path_factory):
    """A private cache directory holding the aligned Bible, built once for this module."""
    with pytest.MonkeyPatch.context() as patch:
        cache = tmp_path_factory.mktemp("cache")
        patch.setenv("DISTILMT_CACHE", str(cache))
        yield cache, build_splits(DataConfig())


def test_bible_splits(bible_cache):
    cache, splits = bible_cache
    total = len(splits.train) + len(splits.dev) + len(splits.test)
    assert 27_000 < total < 29_000
    assert not sources(splits.train) & (sources(splits.dev) | sources(splits.test))
    rows = read_tsv(cache / corpus.BIBLE_CACHE_FILE, columns=3)
    for books, split in ((bible.DEV_BOOKS, splits.dev), (bible.TEST_BOOKS, splits.test)):
        whole_books = [(en, hu) for ref, en, hu in rows if ref.split()[0] in books]
        assert split == whole_books and len(split) > 300
    for src, tgt in splits.train + splits.dev + splits.test:
        for text in (src, tgt):
            assert "`" not in text and "  " not in text and text == text.strip()
    stats = splits.stats
    assert stats["corpus"] == "bible" and stats["direction"] == "en-hu"
    assert stats["train"] == len(splits.train) and stats["dev"] == len(splits.dev) and stats["test"] == len(splits.test)


def test_bible_cache_is_reused(bible_cache, monkeypatch):
    cache, splits = bible_cache
    monkeypatch.setenv("DISTILMT_CACHE", str(cache))
    monkeypatch.setattr(bible, "aligned_verses", lambda: pytest.fail("the cached verses were not reused"))
    assert build_splits(DataConfig()).test == splits.test


def test_bible_other_direction_and_cap(bible_cache, monkeypatch):
    cache, splits = bible_cache
    monkeypatch.setenv("DISTILMT_CACHE", str(cache))
    hu_en = build_splits(DataConfig(source_lang="hu", target_lang="en"))
    assert hu_en.test == [(hu, en) for en, hu in splits.test]
    assert not sources(hu_en.train) & (sources(hu_en.dev) | sources(hu_en.test))
    capped = build_splits(DataConfig(max_train_pairs=1000))
    assert len(capped.train) == 1000 and set(capped.train) <= set(splits.train)
    assert capped.train == build_splits(DataConfig(max_train_pairs=1000)).train
    assert capped.stats["train_dropped_cap"] == len(splits.train) - 1000


# --- user corpora ------------------------------------------------------------------------------

def make_tsv(path: Path, n: int, extra: str = "") -> Path:
    path.write_text("".join(f"sentence {i}.\tmondat {i}.\n" for i in range(n)) + extra, encoding="utf-8")
    return path


def test_user_corpus_held_out_with_fixed_seed(tmp_path):
    path = make_tsv(tmp_path / "c.tsv", 100, "sentence 1.\tmondat 1.\n")
    cfg = DataConfig(corpus=str(path), dev_size=10, test_size=20)
    splits = build_splits(cfg)
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (70, 10, 20)
    assert len(set(splits.train + splits.dev + splits.test)) == 100
    assert splits == build_splits(cfg)
    assert splits.stats["duplicates_dropped"] == 1 and splits.stats["format"] == "tsv"


def test_the_language_check_samples_the_whole_corpus_not_its_head(tmp_path, caplog):
    # 1000 good pairs, then 3000 with the same text on both sides (a second file concatenated wrongly): the first
    # 2000 lines are half good, the corpus is three quarters broken
    path = make_tsv(tmp_path / "c.tsv", 1000, "".join(f"line {i}.\tline {i}.\n" for i in range(3000)))
    with caplog.at_level(logging.WARNING, logger="distilmt.data.corpus"):
        build_splits(DataConfig(corpus=str(path), dev_size=10, test_size=10))
    warned = [r.getMessage() for r in caplog.records if "same text on both sides" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith(f"{path}: 7")  # 75 % of a uniform sample, give or take


def test_user_corpus_too_small_to_hold_out(tmp_path):
    cfg = DataConfig(corpus=str(make_tsv(tmp_path / "small.tsv", 29)), dev_size=5, test_size=10)
    with pytest.raises(CorpusError, match=r"small\.tsv: 29 distinct .* provide data\.dev_file and data\.test_file"):
        build_splits(cfg)
    assert len(build_splits(DataConfig(corpus=cfg.corpus, dev_size=5, test_size=9)).train) == 15


def test_user_dev_and_test_files_and_overlap(tmp_path):
    make_tsv(tmp_path / "c.tsv", 50, "sentence 3.\tmásik fordítás.\n")
    (tmp_path / "dev.jsonl").write_text(json.dumps({"en": "sentence 3.", "hu": "mondat 3."}) + "\n", encoding="utf-8")
    (tmp_path / "test.tsv").write_text("sentence 4.\tmondat 4.\nbad line\n", encoding="utf-8")
    cfg = DataConfig(corpus=str(tmp_path / "c.tsv"), dev_file=str(tmp_path / "dev.jsonl"),
                     test_file=str(tmp_path / "test.tsv"), skip_bad_lines=True)
    splits = build_splits(cfg)
    assert splits.dev == [("sentence 3.", "mondat 3.")] and splits.test == [("sentence 4.", "mondat 4.")]
    assert len(splits.train) == 48 and not sources(splits.train) & {"sentence 3.", "sentence 4."}
    assert splits.stats["train_dropped_overlap"] == 3 and splits.stats["skipped_bad_lines"] == 1


def test_nothing_left_to_train_on(tmp_path):
    path = make_tsv(tmp_path / "c.tsv", 5)
    with pytest.raises(CorpusError, match=r"c\.tsv: no training pairs are left"):
        build_splits(DataConfig(corpus=str(path), dev_file=str(path), test_file=str(path)))


def test_user_corpus_errors_name_the_file(tmp_path):
    with pytest.raises(CorpusError, match=r"missing\.tsv: file not found"):
        build_splits(DataConfig(corpus=str(tmp_path / "missing.tsv")))
    bad = make_tsv(tmp_path / "bad.tsv", 3, "oops\n")
    with pytest.raises(CorpusError, match=r"bad\.tsv:4: .*data\.skip_bad_lines=true"):
        build_splits(DataConfig(corpus=str(bad), dev_size=1, test_size=1))


# --- the prepared data directory -------------------------------------------------------------------

def test_prepare_data_writes_and_skips_when_complete(tmp_path, monkeypatch):
    cfg = DataConfig(corpus=str(make_tsv(tmp_path / "c.tsv", 60)), dev_size=5, test_size=5)
    data = tmp_path / "run" / "data"
    first = prepare_data(cfg, data)
    assert sorted(p.name for p in data.iterdir()) == ["dev.index.npy", "dev.tsv", "stats.json", "test.index.npy",
                                                      "test.tsv", "train.index.npy", "train.tsv"]
    assert json.loads((data / "stats.json").read_text())["train"] == 50
    monkeypatch.setattr(corpus, "build_splits", lambda cfg: pytest.fail("complete data was rebuilt"))
    again = prepare_data(DataConfig(**{**vars(cfg), "vocab_size": 999}), data)  # a tokenizer setting
    assert again == first == load_splits(data)


def test_prepare_data_redoes_a_half_finished_directory(tmp_path):
    cfg = DataConfig(corpus=str(make_tsv(tmp_path / "c.tsv", 60)), dev_size=5, test_size=5)
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.tsv").write_text("half a\n", encoding="utf-8")  # interrupted before stats.json
    assert len(prepare_data(cfg, data).train) == 50
    assert len(load_splits(data).train) == 50


def test_prepare_data_refuses_other_settings(tmp_path):
    path = str(make_tsv(tmp_path / "c.tsv", 60))
    prepare_data(DataConfig(corpus=path, dev_size=5, test_size=5), tmp_path / "data")
    before = (tmp_path / "data" / "train.tsv").read_bytes()
    with pytest.raises(CorpusError) as error:
        prepare_data(DataConfig(corpus=path, dev_size=5, test_size=5, max_train_pairs=10), tmp_path / "data")
    assert "data.max_train_pairs was 0, now 10" in str(error.value)
    assert "use a new run directory" in str(error.value) and str(tmp_path / "data") in str(error.value)
    assert (tmp_path / "data" / "train.tsv").read_bytes() == before


def test_load_splits_needs_prepared_data(tmp_path):
    with pytest.raises(CorpusError, match=r"no prepared data \(stats\.json is missing\); run `distilmt prepare-data`"):
        load_splits(tmp_path)


def test_load_splits_notices_a_changed_directory(tmp_path):
    cfg = DataConfig(corpus=str(make_tsv(tmp_path / "c.tsv", 60)), dev_size=5, test_size=5)
    prepare_data(cfg, tmp_path / "data")
    (tmp_path / "data" / "dev.tsv").write_text("a\tb\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"dev\.tsv has 1 pairs but stats\.json says 5"):
        load_splits(tmp_path / "data")
    (tmp_path / "data" / "stats.json").write_text("{", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"stats\.json: cannot be read"):
        load_splits(tmp_path / "data")


# --- a real corpus (read from ../shared/data, never copied into the repository) ----------------------

def test_real_tatoeba_splits():
    path = SHARED_DATA / "tatoeba-en-hu" / "pairs.tsv"
    if not path.exists():
        pytest.skip(f"real corpus {path} is not available on this machine")
    splits = build_splits(DataConfig(corpus=str(path)))
    assert (len(splits.dev), len(splits.test)) == (500, 1000)
    assert not sources(splits.train) & (sources(splits.dev) | sources(splits.test))
    assert splits.stats["train_dropped_overlap"] > 0  # Tatoeba has several translations per sentence
    assert len(splits.train) + splits.stats["train_dropped_overlap"] == 28_555 - 1500
