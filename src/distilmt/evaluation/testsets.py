"""Test sets for a comparison: the primary one and any extra sets (another corpus, the other direction).

A set is named; ``--test-set NAME=SPEC`` gives one on the command line, where SPEC is

- ``PATH``: a corpus in any format the readers take (``.tsv``, ``.jsonl``, or ``PREFIX`` of ``PREFIX.SRC`` /
  ``PREFIX.TGT``), in the primary set's direction;
- ``PATH@SRC-TGT``: the same in the direction SRC -> TGT (``multi30k/test_2016_flickr@en-de``); a TSV's
  first column is then SRC;
- ``PATH@SRC-TGT:reverse``: read the file as SRC-TGT, translate TGT -> SRC (``tatoeba=pairs.tsv@en-hu:reverse``
  tests a hu-en model on an English<TAB>Hungarian file);
- ``@SRC-TGT``: the test split of the run directory, read in that direction (``@hu-en`` on an en-hu run is
  the same sentences translated the other way).

A model trained in a run directory knows its direction (the run's ``config.yaml``); it is not scored on a
set of another direction, and the row says why (:func:`cannot_translate`). Other model directories are
scored on every set.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from ..config import ConfigError, load_config
from ..data.corpus import load_splits
from ..data.readers import read_parallel
from ..models.loading import read_export_info

log = logging.getLogger(__name__)

_DIRECTION = re.compile(r"^([A-Za-z][\w]*)-([A-Za-z][\w]*)$")


class TestSet(NamedTuple):
    """Named parallel test sentences; ``direction`` is "SRC-TGT", or "" when unknown (then no model is
    refused the set)."""

    name: str
    sources: list[str]
    references: list[str]
    target_lang: str
    direction: str = ""
    origin: str = ""  # where the sentences come from, for the report

    __test__ = False  # not a pytest test class

    def head(self, n: int) -> TestSet:
        """The first ``n`` sentence pairs (all of them for n = 0)."""
        return self._replace(sources=self.sources[:n], references=self.references[:n]) if n else self

    def describe(self) -> dict:
        return {"name": self.name, "direction": self.direction, "sentences": len(self.sources), "origin": self.origin}


def from_pairs(name: str, pairs: Sequence[tuple[str, str]], direction: str, origin: str = "") -> TestSet:
    return TestSet(name, [s for s, _ in pairs], [t for _, t in pairs], split_direction(direction)[1], direction,
                   origin)


def split_direction(direction: str, what: str = "--direction") -> tuple[str, str]:
    """("en", "hu") from "en-hu"; a ConfigError naming ``what`` otherwise."""

    match = _DIRECTION.match(direction or "")
    if not match or match.group(1) == match.group(2):
        raise ConfigError(f"{what} {direction!r}: write the direction as SRC-TGT with two different languages, "
                          "e.g. en-hu or hu-en")
    return match.group(1), match.group(2)


def parse_spec(item: str) -> tuple[str, str, str | None, bool]:
    """``NAME=PATH[@SRC-TGT[:reverse]]`` or ``NAME=@SRC-TGT`` as (name, path or "", file direction or None,
    reverse)."""

    name, sep, spec = item.partition("=")
    name = name.strip()
    if not sep or not name or not spec:
        raise ConfigError(f"--test-set {item!r}: write it as NAME=PATH, NAME=PATH@SRC-TGT[:reverse] or NAME=@SRC-TGT "
                          "(the run's test split in that direction), e.g. flickr=data/test_2016_flickr@en-de")
    path, at, direction = spec.rpartition("@")
    direction, colon, flag = direction.partition(":")
    if not at or not _DIRECTION.match(direction) or (colon and flag != "reverse"):
        if at and _DIRECTION.match(direction):
            raise ConfigError(f"--test-set {name}: ':{flag}' after @{direction} is not ':reverse'")
        return name, spec, None, False  # an @ that is part of the path
    split_direction(direction, f"--test-set {name}")
    if colon and not path:
        raise ConfigError(f"--test-set {name}=@{direction}:reverse: write the run split's direction itself, "
                          f"e.g. @{'-'.join(reversed(direction.split('-')))}")
    return name, path, direction, bool(colon)


def load_test_set(item: str, default_direction: str, run_dir: str | Path | None = None) -> TestSet:
    """Read one ``--test-set NAME=SPEC`` (see the module docstring); ``default_direction`` applies to a
    PATH without ``@SRC-TGT``; ``@SRC-TGT`` reads the test split of ``run_dir``."""

    name, path, direction, reverse = parse_spec(item)
    if not path:
        return run_split(run_dir, direction, name)
    direction = direction or default_direction
    src, tgt = split_direction(direction, f"--test-set {name}")
    pairs, _ = read_parallel(path, src_lang=src, tgt_lang=tgt)  # a CorpusError names the file and line
    if reverse:
        pairs, direction = [(t, s) for s, t in pairs], f"{tgt}-{src}"
    return from_pairs(name, pairs, direction, origin=f"{path} ({direction})")


def run_split(run_dir: str | Path | None, direction: str, name: str = "test") -> TestSet:
    """The test split of a run directory in ``direction``: as prepared, or with its sides swapped."""

    if run_dir is None:
        raise ConfigError(f"--test-set {name}=@{direction}: needs --run-dir, the run whose test split to read")
    run_dir = Path(run_dir)
    prepared = run_direction(run_dir)
    if prepared is None:
        raise ConfigError(f"--test-set {name}=@{direction}: {run_dir} has no config.yaml; point --run-dir at a run")
    src, tgt = prepared.split("-", 1)
    if direction not in (prepared, f"{tgt}-{src}"):
        raise ConfigError(f"--test-set {name}=@{direction}: the test split of {run_dir} is {prepared}; "
                          f"use @{prepared} or @{tgt}-{src}, or give a corpus file of {direction}")
    pairs = load_splits(run_dir / "data").test
    if direction != prepared:
        pairs = [(t, s) for s, t in pairs]
    return from_pairs(name, pairs, direction, origin=f"{run_dir}/data/test.tsv ({direction})")


def run_direction(run_dir: str | Path) -> str | None:
    """The direction of a run directory (from its config.yaml), None when it is not a run directory."""

    saved = Path(run_dir) / "config.yaml"
    if not saved.is_file():
        return None
    try:
        return load_config(file=saved).data.direction
    except ConfigError:
        return None


def model_direction(path: str | Path) -> str | None:
    """The direction a model was trained for, when it lives in a run directory (RUN/NAME, or its export
    RUN/export/NAME, or an export whose recorded source does); None when that is unknown."""

    path = Path(path).resolve()
    candidates = [path.parent, path.parent.parent]
    source = read_export_info(path).get("source")
    if source:
        candidates.append(Path(source).parent)
    for run_dir in candidates:
        direction = run_direction(run_dir)
        if direction is not None:
            return direction
    return None


def cannot_translate(model_dir_direction: str | None, test_set: TestSet) -> str | None:
    """Why a model of ``model_dir_direction`` is not scored on ``test_set`` (None when it is)."""
    if model_dir_direction is None or not test_set.direction or model_dir_direction == test_set.direction:
        return None
    return (f"trained for {model_dir_direction}, cannot translate {test_set.direction} "
            f"(train a {test_set.direction} run for it, e.g. `distilmt run --direction {test_set.direction}`)")
