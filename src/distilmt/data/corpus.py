"""Train/dev/test splits of the built-in Bible corpus or a user's corpus, saved in a run directory.

Whatever the corpus, no dev or test source sentence occurs in train, exact duplicate pairs are
dropped, and everything that picks sentences at random uses a fixed seed, so the same settings
always give the same splits. A run directory's ``data/`` holds train.tsv, dev.tsv, test.tsv
(source<TAB>target) with their line indexes (NAME.index.npy, :mod:`distilmt.data.store`) and stats.json, written
last, with a fingerprint of the settings used.

The corpus is never held in memory: a first streaming pass keeps two 64-bit hashes per row (of the pair, for
exact duplicates; of the source, for the dev/test check), the splits are decided on those arrays, and a second
pass writes train.tsv line by line. A hash collision (odds about n^2 / 2^65: 3e-8 for a million pairs) would drop
one more pair than needed, never keep a duplicate or a held-out source. The built-in corpus goes the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..errors import CorpusError
from ..rundir import atomic_open
from . import bible
from .languages_check import corpus_warnings
from .readers import BadLines, Pair, detect_format, iter_parallel, read_parallel, read_tsv, write_tsv
from .store import TextSplit, write_split

logger = logging.getLogger(__name__)

SEED = 13
SPLITS = ("train", "dev", "test")
STATS_FILE = "stats.json"
BIBLE_CACHE_FILE = "bible-v1.tsv"
SPLITS_VERSION = 1  # bump when the way splits are built changes, so old run directories are not reused


@dataclass
class Splits:
    """Sentence pairs (source, target) of each split, and what was counted while building them."""

    train: Sequence[Pair]  # a TextSplit when loaded from a run directory
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


TRAIN, DEV, TEST = 1, 2, 3  # what each corpus row becomes (0: dropped)
_CODE = {"train": TRAIN, "dev": DEV, "test": TEST}


@dataclass
class _Plan:
    """Where each row of a corpus goes, decided in one streaming pass that keeps only two 8-byte hashes per row:
    ``rows()`` reads the corpus again, in the same order, and ``where[i]`` is row i's split (0: dropped)."""

    rows: Callable[[], Iterator[Pair]]
    where: np.ndarray
    dev: list[Pair] | None  # from the user's dev file, else taken from the rows
    test: list[Pair] | None
    stats: dict


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def _hash_rows(rows: Iterable[Pair], warn_sample: list[Pair] | None = None, sample: int = 2000
               ) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of each pair and of each source, in one pass; optionally ``warn_sample`` gets ``sample`` pairs
    drawn uniformly from the whole corpus (reservoir sampling, fixed seed), not its first lines: a corpus whose
    columns are swapped after its first file of a concatenation is still seen."""
    pair_hashes, source_hashes = array("Q"), array("Q")
    rng = random.Random(0)
    for row, (src, tgt) in enumerate(rows):
        pair_hashes.append(_hash(f"{src}\t{tgt}"))
        source_hashes.append(_hash(src))
        if warn_sample is not None:
            if row < sample:
                warn_sample.append((src, tgt))
            elif (slot := rng.randrange(row + 1)) < sample:
                warn_sample[slot] = (src, tgt)
    return np.frombuffer(pair_hashes, dtype=np.uint64), np.frombuffer(source_hashes, dtype=np.uint64)


def _first_occurrences(hashes: np.ndarray) -> np.ndarray:
    """Row numbers of the first occurrence of each distinct hash, in row order (exact duplicates dropped)."""
    _, first = np.unique(hashes, return_index=True)
    first.sort()
    return first


def plan_splits(cfg: DataConfig) -> _Plan:
    """Decide train, dev and test (cfg.source_lang -> cfg.target_lang) by hashing in streaming passes: exact duplicate
    pairs are dropped, no dev or test source sentence stays in train, and ``data.max_train_pairs`` caps train."""
    plan, source_hashes = _bible_plan(cfg) if cfg.corpus == "bible" else _user_plan(cfg)
    where, stats = plan.where, plan.stats
    held = [source_hashes[(where == DEV) | (where == TEST)]]
    held += [np.array([_hash(src) for src, _ in pairs], dtype=np.uint64) for pairs in (plan.dev, plan.test) if pairs]
    overlap = (where == TRAIN) & np.isin(source_hashes, np.concatenate(held))
    where[overlap] = 0
    stats["train_dropped_overlap"] = int(overlap.sum())
    train = np.flatnonzero(where == TRAIN)
    if not len(train):
        raise CorpusError(f"{cfg.corpus}: no training pairs are left after removing those whose source sentence "
                          "is also in dev or test; check data.dev_file and data.test_file")
    stats["train_dropped_cap"] = 0
    if cfg.max_train_pairs and len(train) > cfg.max_train_pairs:
        chosen = sorted(random.Random(SEED).sample(range(len(train)), cfg.max_train_pairs))
        stats["train_dropped_cap"] = len(train) - len(chosen)
        where[train] = 0
        where[train[chosen]] = TRAIN
    counts = {name: int((where == code).sum()) for name, code in _CODE.items()}
    for name, given in (("dev", plan.dev), ("test", plan.test)):
        if given is not None:
            counts[name] = len(given)
    stats.update(counts)
    return plan


def _walk(plan: _Plan, dev: list[Pair], test: list[Pair]) -> Iterator[Pair]:
    """The train pairs of ``plan`` in corpus order, read again from the corpus; its dev and test pairs are put into
    ``dev`` and ``test`` on the way (or taken from the user's files)."""
    parts = {DEV: dev, TEST: test}
    for pair, code in zip(plan.rows(), plan.where.tobytes()):
        if code == TRAIN:
            yield pair
        elif code:
            parts[code].append(pair)
    for given, part in ((plan.dev, dev), (plan.test, test)):
        if given is not None:
            part[:] = given


def build_splits(cfg: DataConfig) -> Splits:
    """Train, dev and test pairs in the direction cfg.source_lang -> cfg.target_lang, in memory (see
    :func:`prepare_data` for the same splits written to disk without holding train in memory)."""
    plan = plan_splits(cfg)
    dev, test = [], []
    train = list(_walk(plan, dev, test))
    return Splits(train, dev, test, plan.stats)


def _bible_plan(cfg: DataConfig) -> tuple[_Plan, np.ndarray]:
    """The built-in corpus split by book: DEV_BOOKS and TEST_BOOKS held out whole; duplicate train pairs dropped."""
    column = {"en": 1, "hu": 2}
    src, tgt = column[cfg.source_lang], column[cfg.target_lang]
    split_of = {book: DEV for book in bible.DEV_BOOKS} | {book: TEST for book in bible.TEST_BOOKS}
    verses = bible_verses()

    def rows() -> Iterator[Pair]:
        return ((row[src], row[tgt]) for row in verses)

    where = np.array([split_of.get(row[0].split()[0], TRAIN) for row in verses], dtype=np.uint8)
    pair_hashes, source_hashes = _hash_rows(rows())
    train = np.flatnonzero(where == TRAIN)
    kept = train[_first_occurrences(pair_hashes[train])]
    where[train] = 0
    where[kept] = TRAIN
    stats = {
        "corpus": "bible", "format": "bible", "direction": cfg.direction, "pairs_read": len(verses),
        "skipped_bad_lines": 0, "duplicates_dropped": len(train) - len(kept),
        "dev_from": "books " + " ".join(bible.DEV_BOOKS), "test_from": "books " + " ".join(bible.TEST_BOOKS),
    }
    return _Plan(rows, where, None, None, stats), source_hashes


def _user_plan(cfg: DataConfig) -> tuple[_Plan, np.ndarray]:
    """A user's corpus; dev and test come from their own files or are held out at random (fixed seed)."""

    def rows(bad: BadLines | None = None) -> Iterator[Pair]:
        return iter_parallel(cfg.corpus, cfg.format, cfg.source_lang, cfg.target_lang, cfg.src_field, cfg.tgt_field,
                             bad or BadLines(True, quiet=True))  # a second pass: the first raised or counted

    bad = BadLines(cfg.skip_bad_lines)
    drawn: list[Pair] = []
    pair_hashes, source_hashes = _hash_rows(rows(bad), drawn)
    distinct = _first_occurrences(pair_hashes)
    for warning in corpus_warnings(list(dict.fromkeys(drawn)), cfg.source_lang, cfg.target_lang, cfg.corpus):
        logger.warning(warning)
    skipped = bad.count

    def read(path: str) -> list[Pair]:
        nonlocal skipped
        pairs, n_bad = read_parallel(path, cfg.format, cfg.source_lang, cfg.target_lang,
                                     cfg.src_field, cfg.tgt_field, cfg.skip_bad_lines)
        skipped += n_bad
        return pairs

    dev = read(cfg.dev_file) if cfg.dev_file else None
    test = read(cfg.test_file) if cfg.test_file else None
    n_dev = 0 if cfg.dev_file else cfg.dev_size
    n_test = 0 if cfg.test_file else cfg.test_size
    if len(distinct) - (n_dev + n_test) < n_dev + n_test:
        raise CorpusError(f"{cfg.corpus}: {len(distinct)} distinct sentence pairs are too few to hold out {n_dev} for "
                          f"dev and {n_test} for test and keep at least as many for training; provide data.dev_file "
                          "and data.test_file, or lower data.dev_size and data.test_size")
    order = list(range(len(distinct)))
    random.Random(SEED).shuffle(order)
    where = np.zeros(len(pair_hashes), dtype=np.uint8)
    where[distinct] = TRAIN
    where[distinct[order[:n_test]]] = TEST
    where[distinct[order[n_test:n_test + n_dev]]] = DEV
    del order
    fmt = detect_format(cfg.corpus, cfg.source_lang, cfg.target_lang) if cfg.format == "auto" else cfg.format
    held = f"held out from the corpus (seed {SEED})"
    stats = {
        "corpus": cfg.corpus, "format": fmt, "direction": cfg.direction, "pairs_read": len(pair_hashes),
        "skipped_bad_lines": skipped, "duplicates_dropped": len(pair_hashes) - len(distinct),
        "dev_from": cfg.dev_file or held, "test_from": cfg.test_file or held,
    }
    return _Plan(rows, where, dev, test, stats), source_hashes


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
    plan = plan_splits(cfg)
    plan.stats.update(fingerprint=fingerprint, data_config=fields)
    dev, test = [], []
    write_split(_walk(plan, dev, test), data_dir / "train.tsv")  # streamed: train is never held in memory
    write_split(dev, data_dir / "dev.tsv")
    write_split(test, data_dir / "test.tsv")
    with atomic_open(data_dir / STATS_FILE) as handle:  # last: its presence means the data is complete
        json.dump(plan.stats, handle, indent=2, ensure_ascii=False)
    return load_splits(data_dir)


def load_splits(data_dir: str | Path) -> Splits:
    """The splits saved by :func:`prepare_data` in ``data_dir``: train as a lazy :class:`TextSplit` (read from disk
    as it is used), dev and test as lists."""
    data_dir = Path(data_dir)
    for name in (STATS_FILE, *(f"{split}.tsv" for split in SPLITS)):
        if not (data_dir / name).is_file():
            raise CorpusError(f"{data_dir}: no prepared data ({name} is missing); run `distilmt prepare-data` first")
    stats = _read_stats(data_dir)
    parts = {}
    for name in SPLITS:
        path = data_dir / f"{name}.tsv"
        split = TextSplit(path)
        parts[name] = split if name == "train" else list(split)
        if stats.get(name) != len(split):
            raise CorpusError(f"{path} has {len(split)} pairs but {STATS_FILE} says {stats.get(name)}; "
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
