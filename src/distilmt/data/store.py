"""Memory-mapped storage of a split and of its tokenised form, so no stage holds the corpus as Python objects.

A split on disk is our TSV (source<TAB>target, one pair a line) plus ``NAME.index.npy``: int64 [n + 1] byte offsets,
line i is ``bytes[offsets[i]:offsets[i+1]]``. :class:`TextSplit` opens it as a lazy sequence (``len``, indexing,
iteration streams the file), read through the page cache.

Its tokenised form is a directory next to it, ``NAME.tokens-FINGERPRINT/`` (the first 16 hex digits of the
tokenizer's fingerprint: a split is tokenised once per tokenizer, whichever stage needs it first)::

    meta.json           format, number of pairs, token dtype, the tokenizer's full fingerprint, the split's size
    src.bin, tgt.bin    every source's (target's) token ids end to end, uint16 when the vocabulary allows, else int32
    src.index.npy       int64 [n + 1]: pair i's source ids are src.bin[offsets[i]:offsets[i+1]] (same for tgt)

Flat token arrays with offsets, as fairseq's MMapIndexedDataset and Megatron's indexed dataset store them, need
nothing beyond numpy: opened with ``np.memmap``/``mmap_mode="r"``, every process (and every DDP rank) shares one copy
of the pages in use through the page cache instead of holding its own lists. The ids are exactly those of the
in-memory path (:class:`TokenArrays.encode`, the same batched encoding), untruncated: which pairs a length limit
drops or cuts is decided when a dataset is built on them (:class:`~distilmt.data.batching.ParallelDataset`).

The directory is written under a temporary name and renamed into place, under a lock file, so concurrent processes
build it once and a crash never leaves a half-written store behind.
"""

from __future__ import annotations

import fcntl
import io
import itertools
import json
import mmap
import os
import shutil
import uuid
from array import array
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from ..errors import CorpusError
from ..rundir import atomic_open
from .languages import source_ids
from .readers import tsv_line
from .tokenizer import tokenizer_fingerprint

Pair = tuple[str, str]

FORMAT = "distilmt-tokens/1"
ENCODE_BATCH = 8192  # pairs per tokenizer call: big enough for the fast tokenizer's threads, small in memory


# -- a split as a lazy sequence of pairs -------------------------------------------------------------
def index_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(f"{path.stem}.index.npy")


def write_split(pairs: Iterable[Pair], path: str | Path) -> int:
    """Write ``pairs`` as TSV and its line index (:func:`index_path`), both atomically; returns how many."""
    path = Path(path)
    offsets = array("q", [0])
    with atomic_open(path, binary=True) as handle:
        for pair in pairs:
            line = tsv_line(pair, path).encode("utf-8")
            handle.write(line)
            offsets.append(offsets[-1] + len(line))
    _save_index(np.frombuffer(offsets, dtype=np.int64), index_path(path))
    return len(offsets) - 1


def _save_index(offsets: np.ndarray, path: Path) -> None:
    with atomic_open(path, binary=True) as handle:
        np.save(handle, offsets)


def _scan_index(path: Path) -> np.ndarray:
    """Line offsets of a TSV file without an index (a data directory prepared before there were indexes)."""
    offsets = array("q", [0])
    with open(path, "rb") as handle:
        for line in handle:
            offsets.append(offsets[-1] + len(line))
    return np.frombuffer(offsets, dtype=np.int64)


class TextSplit(Sequence):
    """The pairs of a split saved by :func:`write_split`, read lazily: nothing but the offsets index is loaded.

    ``split[i]`` reads one line, ``split[a:b]`` a list of pairs, iteration streams the file. Equal to any sequence
    holding the same pairs in the same order."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise CorpusError(f"{self.path}: file not found; run `distilmt prepare-data` first")
        size = self.path.stat().st_size
        index = index_path(self.path)
        offsets = np.load(index, mmap_mode="r") if index.is_file() else None
        if offsets is None or offsets.ndim != 1 or len(offsets) == 0 or int(offsets[-1]) != size:
            offsets = _scan_index(self.path)  # missing or stale: rebuilt from the file
            try:
                _save_index(offsets, index)
            except OSError:
                pass  # a read-only directory: the index lives in memory only
        self.offsets = offsets
        self.size = size
        self._map: mmap.mmap | None = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def _bytes(self) -> mmap.mmap:
        if self._map is None:
            with open(self.path, "rb") as handle:
                self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        return self._map

    def _pair(self, line: bytes, number: int) -> Pair:
        parts = line.decode("utf-8").rstrip("\n").split("\t")
        if len(parts) != 2:
            raise CorpusError(f"{self.path}:{number}: {len(parts)} columns instead of 2; this file is damaged or not "
                              "written by distilmt, delete it and prepare the data again")
        return parts[0], parts[1]

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        index = int(index)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"pair {index} of {n}")
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        return self._pair(self._bytes()[start:end], index + 1)

    def __iter__(self) -> Iterator[Pair]:
        with open(self.path, "rb") as handle:
            for number, line in enumerate(handle, 1):
                yield self._pair(line, number)

    def __eq__(self, other) -> bool:
        if isinstance(other, TextSplit) and other.path == self.path and other.size == self.size:
            return True
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)) or len(other) != len(self):
            return False
        return all(a == tuple(b) for a, b in zip(self, other))

    __hash__ = None

    def __getstate__(self) -> dict:  # a DataLoader worker opens its own map
        return {**self.__dict__, "_map": None, "offsets": np.asarray(self.offsets)}

    def __repr__(self) -> str:
        return f"TextSplit({str(self.path)!r}, {len(self)} pairs)"


# -- token ids as flat arrays with offsets -----------------------------------------------------------
def token_dtype(tokenizer) -> np.dtype:
    return np.dtype(np.uint16) if len(tokenizer) <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)


def encode_batches(pairs: Iterable[Pair], tokenizer, batch: int = ENCODE_BATCH
                   ) -> Iterator[tuple[list[list[int]], list[list[int]]]]:
    """(source ids, target ids) of ``pairs``, ``batch`` pairs per tokenizer call, as the model reads them: sources
    with the tokenizer's language setup (:func:`~distilmt.data.languages.source_ids`), targets after its
    ``tgt_lang`` code when it has one."""
    iterator = iter(pairs)
    while chunk := list(itertools.islice(iterator, batch)):
        sources = source_ids(tokenizer, [s for s, _ in chunk])
        targets = tokenizer(text_target=[t for _, t in chunk])["input_ids"]
        yield sources, targets


def _write_ids(ids: list[list[int]], handle, lengths: array, dtype: np.dtype) -> None:
    sizes = [len(x) for x in ids]
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=sum(sizes))
    if len(flat) and (flat.min() < 0 or flat.max() > np.iinfo(dtype).max):
        raise ValueError(f"token id {int(flat.max())} does not fit {dtype.name}")
    handle.write(flat.astype(dtype).tobytes())
    lengths.extend(sizes)


def _offsets(lengths: array) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(np.frombuffer(lengths, dtype=np.int64), out=offsets[1:])
    return offsets


class TokenArrays:
    """Token ids of n pairs: ``src``/``tgt`` flat id arrays (in memory or memory-mapped) and their int64 offsets."""

    def __init__(self, src: np.ndarray, src_offsets: np.ndarray, tgt: np.ndarray, tgt_offsets: np.ndarray):
        self.src, self.src_offsets, self.tgt, self.tgt_offsets = src, src_offsets, tgt, tgt_offsets

    @classmethod
    def encode(cls, pairs: Iterable[Pair], tokenizer) -> "TokenArrays":
        """The ids of ``pairs`` in memory (small sets: dev, test, a distilled corpus given as a list)."""
        dtype = token_dtype(tokenizer)
        buffers, lengths = (io.BytesIO(), io.BytesIO()), (array("q"), array("q"))
        for ids in encode_batches(pairs, tokenizer):
            for side in (0, 1):
                _write_ids(ids[side], buffers[side], lengths[side], dtype)
        src, tgt = (np.frombuffer(b.getvalue(), dtype=dtype) for b in buffers)
        return cls(src, _offsets(lengths[0]), tgt, _offsets(lengths[1]))

    def __len__(self) -> int:
        return len(self.src_offsets) - 1

    def source_lengths(self) -> np.ndarray:
        return np.diff(self.src_offsets)

    def target_lengths(self) -> np.ndarray:
        return np.diff(self.tgt_offsets)

    def source(self, index: int) -> list[int]:
        return self.src[self.src_offsets[index]:self.src_offsets[index + 1]].tolist()

    def target(self, index: int) -> list[int]:
        return self.tgt[self.tgt_offsets[index]:self.tgt_offsets[index + 1]].tolist()


def store_dir(split: TextSplit, tokenizer) -> Path:
    """Where the tokenised form of ``split`` by ``tokenizer`` lives: ``NAME.tokens-FINGERPRINT16/`` next to it."""
    return split.path.with_name(f"{split.path.stem}.tokens-{tokenizer_fingerprint(tokenizer)[:16]}")


def token_store(split: TextSplit, tokenizer) -> TokenArrays:
    """The memory-mapped token ids of ``split`` by ``tokenizer``, tokenised and saved first when not there yet."""
    out = store_dir(split, tokenizer)
    fingerprint = tokenizer_fingerprint(tokenizer)
    if not _usable(out, split, fingerprint):
        with open(out.with_name(f".{out.name}.lock"), "w") as lock:  # one process builds, the others wait for it
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not _usable(out, split, fingerprint):
                _build(out, split, tokenizer, fingerprint)
    return _open(out, split)


def _meta(out: Path) -> dict | None:
    try:
        meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT else None


def _usable(out: Path, split: TextSplit, fingerprint: str) -> bool:
    meta = _meta(out)
    return (meta is not None and meta.get("tokenizer") == fingerprint and meta.get("pairs") == len(split)
            and meta.get("split_bytes") == split.size)


def _build(out: Path, split: TextSplit, tokenizer, fingerprint: str) -> None:
    tmp = out.with_name(f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir(parents=True)
    try:
        dtype = token_dtype(tokenizer)
        lengths = (array("q"), array("q"))
        with open(tmp / "src.bin", "wb") as src, open(tmp / "tgt.bin", "wb") as tgt:
            for ids in encode_batches(split, tokenizer):
                _write_ids(ids[0], src, lengths[0], dtype)
                _write_ids(ids[1], tgt, lengths[1], dtype)
        for side, name in enumerate(("src", "tgt")):
            np.save(tmp / f"{name}.index.npy", _offsets(lengths[side]))
        meta = {"format": FORMAT, "pairs": len(split), "dtype": dtype.name, "tokenizer": fingerprint,
                "split": split.path.name, "split_bytes": split.size,
                "tokens": {"src": int(sum(lengths[0])), "tgt": int(sum(lengths[1]))}}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)  # a stale store (the split was prepared again)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _open(out: Path, split: TextSplit) -> TokenArrays:
    meta = _meta(out)
    try:
        dtype = np.dtype(meta["dtype"])
        sides = []
        for name in ("src", "tgt"):
            offsets = np.load(out / f"{name}.index.npy", mmap_mode="r")
            path = out / f"{name}.bin"
            ids = (np.memmap(path, dtype=dtype, mode="r") if path.stat().st_size else np.zeros(0, dtype=dtype))
            if len(offsets) != len(split) + 1 or int(offsets[-1]) != len(ids):
                raise ValueError(f"{path.name} holds {len(ids)} ids, its index says {int(offsets[-1])}")
            sides += [ids, offsets]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorpusError(f"{out}: the tokenised training data is damaged ({str(exc).splitlines()[0]}); delete "
                          "this directory and it is tokenised again") from None
    return TokenArrays(*sides)
