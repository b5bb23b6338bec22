"""The teacher cache: the frozen teacher's top-k next-token probabilities for every training target token.

Live token-level KD runs the teacher in every step of every epoch. The teacher is frozen, and teacher-forced on
the reference targets its output for a training pair never changes, so one pass over the training set can
store what KD needs and every later step (any epoch, any temperature, any student) reads it back instead.

What is stored, per real target token (teacher-forced on the references, at temperature 1):

* the ``k`` most probable token ids (int16 when the vocabulary has fewer than 32,768 entries, else int32);
* their log-probabilities ``log p_i`` (float16 by default, float32 on request), in descending order;
* the tail mass ``1 - sum_i p_i`` left outside the top k (same dtype), for statistics and diagnostics.

Temperature is applied when the loss is computed, so one cache serves any ``T``. The teacher distribution at
temperature ``T`` is **the top-k renormalised, tail dropped**::

    p_i^T = p_i^(1/T) / sum_{j in top-k} p_j^(1/T)      for the k stored ids, 0 for every other token

which is exactly ``softmax(log p / T)`` over the stored ids (see :func:`distilmt.losses.sparse_forward_kl`). With
``k`` = vocabulary size nothing is dropped and KD from the cache equals KD with the live teacher. With a small
``k`` the dropped tail is the long flat end of the distribution (``stats.json`` reports how much mass it holds on
average). Token KD uses the forward KL, which is finite on such a distribution (tokens with p = 0 add exactly 0);
so are JSD with 0 < beta < 1, skew KL with alpha > 0 and TVD, but the reverse KL ``KL(p_student || p_teacher)``
is infinite wherever the student puts mass outside the top k: do not pair it with a truncated cache.

On disk (``RUN_DIR/teacher-cache/``)::

    header.json         format, k, vocabulary size, dtypes, counts, shard size, and the fingerprint: sha256 of
                        the training pairs (+ max_tokens), of the tokenizer, and of the teacher's weights
    offsets.npy         int64 [n_examples + 1]: example i owns token rows offsets[i]:offsets[i+1]
    shard-00000.npy     one structured array per shard of ``shard_size`` examples (fields ids, logp, tail),
    ...                 opened memory-mapped, so training reads only the rows of its batch
    stats.json          written last: bytes per target token, total size, mean top-k mass

Building is resumable: each shard is written to a temporary file and renamed into place (``os.replace``) once
complete, so an interrupted build leaves only whole shards behind and a rerun continues from the first missing
one. Each shard's content depends only on the examples in it (its batches are formed inside the shard), so a
resumed build is byte-identical to an uninterrupted one. For the same reason the shards can be built by several
processes at once (``shards=slice(rank, None, world_size)``: rank r builds shards r, r + N, ...; see
:mod:`distilmt.ranks`), and :func:`finish_teacher_cache` then writes ``stats.json`` once: the result is
byte-identical to a one-process build. A cache whose fingerprint does not match the pairs,
tokenizer or teacher it is used with is refused with a :class:`CacheError`, never silently used.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..data.batching import ParallelDataset, Seq2SeqCollator, token_batches
from ..data.tokenizer import tokenizer_fingerprint
from ..errors import CacheError
from ..rundir import atomic_open, check_fingerprint, pairs_fingerprint, teacher_fingerprint
from .signal import TeacherBase, topk_to_dense

log = logging.getLogger(__name__)

FORMAT = "distilmt-teacher-cache/1"
HEADER, OFFSETS, STATS = "header.json", "offsets.npy", "stats.json"
DTYPES = {"float16": np.float16, "float32": np.float32}


def rebuild_hint(cache_dir: str | Path) -> str:
    cache_dir = Path(cache_dir)
    return (f"rebuild it with `distilmt cache-teacher --run-dir {cache_dir.parent} --rebuild`, "
            f"or delete {cache_dir}")


# -- fingerprints -------------------------------------------------------------------------------------


def cache_fingerprint(pairs, tokenizer, teacher_id: str, max_tokens: int = 0) -> dict[str, str]:
    """What a cache is made from: the pairs (with max_tokens), the tokenizer, the teacher's weights."""
    return {"pairs": pairs_fingerprint(pairs, max_tokens), "tokenizer": tokenizer_fingerprint(tokenizer),
            "teacher": teacher_id}


_WHAT = {"pairs": "other training pairs", "tokenizer": "another tokenizer", "teacher": "another teacher"}


# -- building -----------------------------------------------------------------------------------------
def record_dtype(k: int, vocab_size: int, dtype: str) -> np.dtype:
    ids = np.int16 if vocab_size < 32768 else np.int32
    value = DTYPES[dtype]
    return np.dtype([("ids", ids, (k,)), ("logp", value, (k,)), ("tail", value)])


def _shard_name(index: int) -> str:
    return f"shard-{index:05d}.npy"


def is_complete(cache_dir: str | Path) -> bool:
    return (Path(cache_dir) / STATS).is_file()


@torch.no_grad()
def build_teacher_cache(out_dir: str | Path, pairs: Sequence[tuple[str, str]], tokenizer, teacher, *,
                        teacher_id: str | None = None, max_tokens: int = 0, top_k: int = 16,
                        dtype: str = "float16", shard_size: int = 1024, batch_tokens: int = 4000,
                        on_shard: Callable[[int, int], None] | None = None, shards: slice = slice(None)) -> dict | None:
    """One teacher-forced pass of ``teacher`` over ``pairs``; writes (or completes) the cache in ``out_dir``.

    ``pairs``, ``tokenizer`` and ``max_tokens`` must be what training uses: the cache is indexed like
    ``ParallelDataset(pairs, tokenizer, max_tokens)``. ``teacher_id`` is the teacher's fingerprint (default:
    :func:`teacher_fingerprint` of the model). An existing complete cache with the same fingerprint and settings
    is left as it is; a partial one is continued from its first missing shard; one made from anything else
    is refused. ``on_shard(done, total)`` is called after each shard is in place (``done``: the shard's index + 1).

    ``shards`` selects the shard indices this call builds (``range(n_shards)[shards]``, default all): processes
    building disjoint selections at the same time write the same header and offsets and never the same shard. When
    the selection is every shard the cache is finished here (:func:`finish_teacher_cache`) and its stats returned;
    otherwise None, and whoever waited for every builder finishes it.
    """

    if dtype not in DTYPES:
        raise CacheError(f"cache dtype '{dtype}' is not one of {', '.join(DTYPES)}")
    out_dir = Path(out_dir)
    dataset = ParallelDataset(pairs, tokenizer, max_tokens)
    fingerprint = cache_fingerprint(pairs, tokenizer, teacher_id or teacher_fingerprint(teacher), max_tokens)
    vocab_size = int(teacher.get_output_embeddings().weight.shape[0])
    k = min(int(top_k), vocab_size)
    rec = record_dtype(k, vocab_size, dtype)
    lengths = dataset.target_lengths()
    widths = dataset.lengths()
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    n_shards = max(1, -(-len(lengths) // shard_size))
    header = {"format": FORMAT, "k": k, "vocab_size": vocab_size, "ids_dtype": rec["ids"].base.name,
              "value_dtype": dtype, "values": "log-probabilities at T=1, descending", "n_examples": len(lengths),
              "n_tokens": int(offsets[-1]), "shard_size": shard_size, "n_shards": n_shards,
              "max_tokens": int(max_tokens), "fingerprint": fingerprint}

    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / HEADER).is_file():
        existing = _read_header(out_dir)
        check_fingerprint(out_dir, existing.get("fingerprint", {}), fingerprint, _WHAT, CacheError, "teacher cache",
                          rebuild_hint(out_dir))
        if existing != header:
            raise CacheError(f"{out_dir}: holds a teacher cache made with other settings (k, dtype or shard size); "
                             f"{rebuild_hint(out_dir)}")
    else:
        with atomic_open(out_dir / HEADER) as f:
            f.write(json.dumps(header, indent=1))
    if not (out_dir / OFFSETS).is_file():
        with atomic_open(out_dir / OFFSETS, binary=True) as f:
            np.save(f, offsets)
    selected = range(n_shards)[shards]
    if selected == range(n_shards):  # no other process builds here: clear the half-written shard of a past build
        _remove_stale(out_dir)

    device = next(teacher.parameters()).device
    was_training = teacher.training
    teacher.eval()
    collator = Seq2SeqCollator(tokenizer.pad_token_id, teacher.config.decoder_start_token_id)
    for shard in selected:
        path = out_dir / _shard_name(shard)
        if path.is_file():
            continue
        first, last = shard * shard_size, min((shard + 1) * shard_size, len(lengths))
        base = int(offsets[first])
        records = np.zeros(int(offsets[last]) - base, dtype=rec)
        for batch_ids in sorted(token_batches(widths[first:last], batch_tokens, seed=0)):
            examples = [dataset.example(first + i) for i in batch_ids]
            batch = {name: t.to(device) for name, t in collator(examples).items()}
            logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             decoder_input_ids=batch["decoder_input_ids"], use_cache=False).logits
            log_probs = torch.log_softmax(logits.float(), dim=-1)
            values, ids = log_probs.topk(k, dim=-1)
            tail = (-torch.expm1(torch.logsumexp(values, dim=-1))).clamp(min=0.0)
            values, ids, tail = values.cpu().numpy(), ids.cpu().numpy(), tail.cpu().numpy()
            for row, i in enumerate(batch_ids):
                n = int(lengths[first + i])
                start = int(offsets[first + i]) - base
                records["ids"][start : start + n] = ids[row, :n]
                records["logp"][start : start + n] = values[row, :n]
                records["tail"][start : start + n] = tail[row, :n]
        with atomic_open(path, binary=True) as f:
            np.save(f, records)
        if on_shard is not None:
            on_shard(shard + 1, n_shards)
    teacher.train(was_training)
    return finish_teacher_cache(out_dir) if selected == range(n_shards) else None


def finish_teacher_cache(cache_dir: str | Path) -> dict:
    """Complete a cache whose every shard is written: ``stats.json`` (last), stale temporary files removed; returns
    the stats (those already there when it is complete). A missing shard is a CacheError naming it."""
    cache_dir = Path(cache_dir)
    if not is_complete(cache_dir):
        header = _read_header(cache_dir)
        missing = [s for s in range(header["n_shards"]) if not (cache_dir / _shard_name(s)).is_file()]
        if missing:
            raise CacheError(f"{cache_dir}: {len(missing)} of {header['n_shards']} teacher-cache shards are missing "
                             f"(e.g. {_shard_name(missing[0])}); run `distilmt cache-teacher --run-dir "
                             f"{cache_dir.parent}` again to build them")
        _remove_stale(cache_dir)
        with atomic_open(cache_dir / STATS) as f:
            f.write(json.dumps(_stats(cache_dir, header), indent=1))
    return json.loads((cache_dir / STATS).read_text())


def _remove_stale(cache_dir: Path) -> None:
    for stale in cache_dir.glob("*.tmp"):  # the half-written shard of an interrupted build
        stale.unlink(missing_ok=True)


def _stats(out_dir: Path, header: dict) -> dict:
    files = [out_dir / HEADER, out_dir / OFFSETS] + [out_dir / _shard_name(s) for s in range(header["n_shards"])]
    total = sum(f.stat().st_size for f in files)
    tail_sum = 0.0
    for s in range(header["n_shards"]):
        tail_sum += float(np.load(out_dir / _shard_name(s), mmap_mode="r")["tail"].astype(np.float64).sum())
    n = max(header["n_tokens"], 1)
    return {"k": header["k"], "vocab_size": header["vocab_size"], "value_dtype": header["value_dtype"],
            "n_examples": header["n_examples"], "n_tokens": header["n_tokens"], "total_bytes": total,
            "bytes_per_token": round(total / n, 2), "mean_topk_mass": round(1.0 - tail_sum / n, 4)}


def _read_header(cache_dir: Path) -> dict:
    try:
        header = json.loads((cache_dir / HEADER).read_text())
    except (OSError, ValueError) as exc:
        raise CacheError(f"{cache_dir}: unreadable teacher cache header ({exc}); {rebuild_hint(cache_dir)}") from None
    if header.get("format") != FORMAT:
        raise CacheError(f"{cache_dir}: not a teacher cache of this version ({header.get('format')!r}); "
                         f"{rebuild_hint(cache_dir)}")
    return header


# -- reading ------------------------------------------------------------------------------------------
class TeacherCache:
    """A complete cache, verified against what it is used with, read memory-mapped row by row."""

    def __init__(self, cache_dir: str | Path, fingerprint: dict[str, str]):
        self.dir = Path(cache_dir)
        if not (self.dir / HEADER).is_file() or not is_complete(self.dir):
            raise CacheError(f"{self.dir}: no complete teacher cache here; build it with "
                             f"`distilmt cache-teacher --run-dir {self.dir.parent}`")
        self.header = _read_header(self.dir)
        check_fingerprint(self.dir, self.header.get("fingerprint", {}), fingerprint, _WHAT, CacheError, "teacher cache",
                          rebuild_hint(self.dir))
        self.k = self.header["k"]
        self.vocab_size = self.header["vocab_size"]
        self.shard_size = self.header["shard_size"]
        try:
            self.offsets = np.load(self.dir / OFFSETS)
            self.shards = [np.load(self.dir / _shard_name(s), mmap_mode="r") for s in range(self.header["n_shards"])]
        except (OSError, ValueError) as exc:  # a truncated or deleted shard ("mmap length is greater than file size")
            raise CacheError(f"{self.dir}: a teacher-cache file is damaged or missing ({str(exc).splitlines()[0]}); "
                             f"{rebuild_hint(self.dir)}") from None
        self.stats = json.loads((self.dir / STATS).read_text())

    def __len__(self) -> int:
        return self.header["n_examples"]

    def rows(self, index: int) -> np.ndarray:
        """The records (ids, logp, tail) of example ``index``'s target tokens, in order."""
        shard = index // self.shard_size
        base = self.offsets[shard * self.shard_size]
        return self.shards[shard][self.offsets[index] - base : self.offsets[index + 1] - base]

    def topk(self, example_index: torch.Tensor, labels: torch.Tensor,
             ignore_index: int = -100) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids [B, L, k] long, log_probs [B, L, k] float32)`` for a padded batch; pad rows hold id 0, log-prob 0."""
        n, length = labels.shape
        ids = np.zeros((n, length, self.k), dtype=np.int64)
        logp = np.zeros((n, length, self.k), dtype=np.float32)
        real = labels.ne(ignore_index).sum(-1).tolist()
        for row, index in enumerate(example_index.tolist()):
            if not 0 <= index < len(self):
                raise CacheError(f"{self.dir}: example {index} is not in the cache ({len(self)} examples); "
                                 f"{rebuild_hint(self.dir)}")
            records = self.rows(index)
            if len(records) != real[row]:
                raise CacheError(f"{self.dir}: example {index} has {real[row]} target tokens but the cache holds "
                                 f"{len(records)}; {rebuild_hint(self.dir)}")
            ids[row, : len(records)] = records["ids"]
            logp[row, : len(records)] = records["logp"]
        return torch.from_numpy(ids), torch.from_numpy(logp)


__all__ = ["CacheError", "TeacherCache", "build_teacher_cache", "cache_fingerprint", "finish_teacher_cache",
           "is_complete", "pairs_fingerprint", "teacher_fingerprint", "tokenizer_fingerprint"]


class CachedTeacher(TeacherBase):
    """The teacher's top-k next-token distribution read back from a teacher cache (see :mod:`distilmt.teachers.cache`).

    No teacher model is loaded: each training batch reads its examples' rows from the memory-mapped shards,
    found by the batch's ``example_index`` (``ParallelDataset(..., with_index=True)`` and ``Seq2SeqCollator``
    put it there). ``logits(batch)`` returns the cached log-probabilities at the stored ids and ``-inf``
    elsewhere, so its softmax at any temperature T is the top-k renormalised ``p_i^(1/T) / sum_j p_j^(1/T)``;
    ``topk(batch)`` returns the same as ``(ids, log_probs)`` ``[batch, target_length, k]`` so the trainer can
    compute the KL on the k entries alone (:func:`distilmt.losses.sparse_forward_kl`) without a dense tensor.
    """

    has_topk = True
    needs_example_index = True

    def __init__(self, cache):
        self.cache = cache
        self.device = torch.device("cpu")

    @classmethod
    def open(cls, cache_dir, pairs, tokenizer, teacher_id: str, max_tokens: int = 0) -> "CachedTeacher":
        """The cache in ``cache_dir``, refused (CacheError) unless made from these pairs, tokenizer and teacher."""

        return cls(TeacherCache(cache_dir, cache_fingerprint(pairs, tokenizer, teacher_id, max_tokens)))

    def to(self, device: torch.device) -> "CachedTeacher":
        self.device = torch.device(device)
        return self

    def topk(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if "example_index" not in batch:

            raise CacheError("a teacher cache needs each batch's example_index: build the training set with "
                             "ParallelDataset(..., with_index=True) and keep remove_unused_columns=False")
        ids, log_probs = self.cache.topk(batch["example_index"].cpu(), batch["labels"].cpu())
        device = batch["labels"].device
        return ids.to(device, non_blocking=True), log_probs.to(device, non_blocking=True)

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ids, log_probs = self.topk(batch)
        return topk_to_dense(ids, log_probs, self.cache.vocab_size, batch["labels"])  # pad rows finite, masked
