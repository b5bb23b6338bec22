"""Train/dev/test splits of the built-in Bible corpus or a user's corpus, saved in a run directory.

Whatever the corpus, no dev or test source sentence occurs in train, exact duplicate pairs are
dropped, and everything that picks sentences at random uses a fixed seed, so the same settings
always give the same splits. A run directory's ``data/`` holds train.tsv, dev.tsv, test.tsv
(source<TAB>target) and stats.json, written last, with a fingerprint of the settings used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from ..config import DataConfig
from ..errors import CorpusError
from ..rundir import atomic_open
from . import bible
from .languages_check import corpus_warnings
from .readers import Pair, detect_format, read_parallel, read_tsv, write_tsv

logger = logging.getLogger(__name__)

SEED = 13
SPLITS = ("train", "dev", "test")
STATS_FILE = "stats.json"
BIBLE_CACHE_FILE = "bible-v1.tsv"
SPLITS_VERSION = 1  # bump when the way splits are built changes, so old run directories are not reused


@dataclass
class Splits:
    """Sentence pairs (source, target) of each split, and what was counted while building them."""

    train: list[Pair]
    dev: list[Pair]
    test: list[Pair]
    stats: dict = field(default_factory=dict)


def cache_dir() -> Path:
    """Where derived data shared by runs is cached: $DISTILMT_CACHE or ~/.cache/distilmt."""
    return Path(os.environ.get("DISTILMT_CACHE") or Path.home() / ".cache" / "distilmt")


def bible_verses() -> list[tuple[str, str, str]]:
    """(reference, English, Hungarian) of every aligned Bible verse, cached locally after the first call."""
    path = cache_dir() / BIBLE_CACHE_FILE
    if path.is_file():
        try:
            rows = read_tsv(path, columns=3)
            if rows:
                return [(ref, en, hu) for ref, en, hu in rows]
        except CorpusError as exc:
            logger.warning("aligning the Bible again: %s", exc)
    verses, _ = bible.aligned_verses()
    rows = [(verse.ref, verse.en, verse.hu) for verse in verses]
    try:
        write_tsv(rows, path)
    except OSError as exc:
        logger.warning("cannot cache the aligned Bible at %s (%s); it is aligned again next time", path, exc)
    return rows


def build_splits(cfg: DataConfig) -> Splits:
    """Train, dev and test pairs in the direction cfg.source_lang -> cfg.target_lang."""
    if cfg.corpus == "bible":
        train, dev, test, stats = _bible_splits(cfg)
    else:
        train, dev, test, stats = _user_splits(cfg)

    held_out = {src for src, _ in dev} | {src for src, _ in test}
    kept = [pair for pair in train if pair[0] not in held_out]
    stats["train_dropped_overlap"] = len(train) - len(kept)
    if not kept:
        raise CorpusError(f"{cfg.corpus}: no training pairs are left after removing those whose source sentence "
                          "is also in dev or test; check data.dev_file and data.test_file")
    stats["train_dropped_cap"] = 0
    if cfg.max_train_pairs and len(kept) > cfg.max_train_pairs:
        chosen = sorted(random.Random(SEED).sample(range(len(kept)), cfg.max_train_pairs))
        stats["train_dropped_cap"] = len(kept) - len(chosen)
        kept = [kept[i] for i in chosen]
    stats.update(train=len(kept), dev=len(dev), test=len(test))
    return Splits(kept, dev, test, stats)


def _bible_splits(cfg: DataConfig) -> tuple[list[Pair], list[Pair], list[Pair], dict]:
    """The built-in corpus split by book: DEV_BOOKS and TEST_BOOKS held out whole."""
    column = {"en": 1, "hu": 2}
    src, tgt = column[cfg.source_lang], column[cfg.target_lang]
    split_of = {book: "dev" for book in bible.DEV_BOOKS} | {book: "test" for book in bible.TEST_BOOKS}
    parts: dict[str, list[Pair]] = {name: [] for name in SPLITS}
    rows = bible_verses()
    for row in rows:
        parts[split_of.get(row[0].split()[0], "train")].append((row[src], row[tgt]))
    train = list(dict.fromkeys(parts["train"]))
    stats = {
        "corpus": "bible", "format": "bible", "direction": cfg.direction, "pairs_read": len(rows),
        "skipped_bad_lines": 0, "duplicates_dropped": len(parts["train"]) - len(train),
        "dev_from": "books " + " ".join(bible.DEV_BOOKS), "test_from": "books " + " ".join(bible.TEST_BOOKS),
    }
    return train, parts["dev"], parts["test"], stats


def _user_splits(cfg: DataConfig) -> tuple[list[Pair], list[Pair], list[Pair], dict]:
    """A user's corpus; dev and test come from their own files or are held out at random (fixed seed)."""
    skipped = 0

    def read(path: str) -> list[Pair]:
        nonlocal skipped
        pairs, bad = read_parallel(path, cfg.format, cfg.source_lang, cfg.target_lang,
                                   cfg.src_field, cfg.tgt_field, cfg.skip_bad_lines)
        skipped += bad
        return pairs

    read_pairs = read(cfg.corpus)
    pairs = list(dict.fromkeys(read_pairs))
    for warning in corpus_warnings(pairs, cfg.source_lang, cfg.target_lang, cfg.corpus):
        logger.warning(warning)
    dev = read(cfg.dev_file) if cfg.dev_file else []
    test = read(cfg.test_file) if cfg.test_file else []
    n_dev = 0 if cfg.dev_file else cfg.dev_size
    n_test = 0 if cfg.test_file else cfg.test_size
    if len(pairs) - (n_dev + n_test) < n_dev + n_test:
        raise CorpusError(f"{cfg.corpus}: {len(pairs)} distinct sentence pairs are too few to hold out {n_dev} for dev "
                          f"and {n_test} for test and keep at least as many for training; provide data.dev_file "
                          "and data.test_file, or lower data.dev_size and data.test_size")
    order = list(range(len(pairs)))
    random.Random(SEED).shuffle(order)
    test_ids, dev_ids = set(order[:n_test]), set(order[n_test:n_test + n_dev])
    if not cfg.test_file:
        test = [pairs[i] for i in sorted(test_ids)]
    if not cfg.dev_file:
        dev = [pairs[i] for i in sorted(dev_ids)]
    train = [pair for i, pair in enumerate(pairs) if i not in test_ids and i not in dev_ids]
    fmt = detect_format(cfg.corpus, cfg.source_lang, cfg.target_lang) if cfg.format == "auto" else cfg.format
    held = f"held out from the corpus (seed {SEED})"
    stats = {
        "corpus": cfg.corpus, "format": fmt, "direction": cfg.direction, "pairs_read": len(read_pairs),
        "skipped_bad_lines": skipped, "duplicates_dropped": len(read_pairs) - len(pairs),
        "dev_from": cfg.dev_file or held, "test_from": cfg.test_file or held,
    }
    return train, dev, test, stats


def fingerprint_fields(cfg: DataConfig) -> dict:
    """The settings that decide the content of the splits (tokenizer and evaluation settings do not)."""
    names = ["corpus", "source_lang", "target_lang", "max_train_pairs"]
    if cfg.corpus == "bible":
        extra: dict = {"dev_books": list(bible.DEV_BOOKS), "test_books": list(bible.TEST_BOOKS)}
    else:
        names += ["format", "src_field", "tgt_field", "skip_bad_lines", "dev_file", "test_file"]
        names += [] if cfg.dev_file else ["dev_size"]
        names += [] if cfg.test_file else ["test_size"]
        extra = {}
    return {**{f"data.{name}": getattr(cfg, name) for name in names}, **extra, "splits_version": SPLITS_VERSION}


def _fingerprint(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def prepare_data(cfg: DataConfig, data_dir: str | Path) -> Splits:
    """Build the splits and save them in ``data_dir``; reuse what is there if it was built with the same settings."""
    data_dir = Path(data_dir)
    fields = fingerprint_fields(cfg)
    fingerprint = _fingerprint(fields)
    if (data_dir / STATS_FILE).is_file():
        saved = _read_stats(data_dir)
        if saved.get("fingerprint") != fingerprint:
            before = saved.get("data_config", {})
            changed = [f"{key} was {before.get(key)!r}, now {fields.get(key)!r}"
                       for key in sorted(set(before) | set(fields)) if before.get(key) != fields.get(key)]
            raise CorpusError(f"{data_dir} holds data prepared with other settings ({'; '.join(changed)}); "
                              "use a new run directory, or delete this one to prepare it again")
        if all((data_dir / f"{name}.tsv").is_file() for name in SPLITS):
            logger.info("%s: data already prepared with these settings, reusing it", data_dir)
            return load_splits(data_dir)
    splits = build_splits(cfg)
    splits.stats.update(fingerprint=fingerprint, data_config=fields)
    for name in SPLITS:
        write_tsv(getattr(splits, name), data_dir / f"{name}.tsv")
    with atomic_open(data_dir / STATS_FILE) as handle:  # last: its presence means the data is complete
        json.dump(splits.stats, handle, indent=2, ensure_ascii=False)
    return splits


def load_splits(data_dir: str | Path) -> Splits:
    """The splits saved by :func:`prepare_data` in ``data_dir``."""
    data_dir = Path(data_dir)
    for name in (STATS_FILE, *(f"{split}.tsv" for split in SPLITS)):
        if not (data_dir / name).is_file():
            raise CorpusError(f"{data_dir}: no prepared data ({name} is missing); run `distilmt prepare-data` first")
    stats = _read_stats(data_dir)
    parts = {}
    for name in SPLITS:
        path = data_dir / f"{name}.tsv"
        parts[name] = [(src, tgt) for src, tgt in read_tsv(path)]
        if stats.get(name) != len(parts[name]):
            raise CorpusError(f"{path} has {len(parts[name])} pairs but {STATS_FILE} says {stats.get(name)}; "
                              "the directory was changed after preparing it: delete it and run "
                              "`distilmt prepare-data` again")
    return Splits(parts["train"], parts["dev"], parts["test"], stats)


def _read_stats(data_dir: Path) -> dict:
    path = data_dir / STATS_FILE
    try:
        stats = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        stats = None
    if not isinstance(stats, dict):
        raise CorpusError(f"{path}: cannot be read as the JSON written by prepare-data; delete {data_dir} "
                          "and run `distilmt prepare-data` again")
    return stats
