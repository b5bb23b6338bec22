"""Tokenised parallel data, length-bucketed token-budget batches, and the padding collator."""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..losses import IGNORE_INDEX
from .store import TextSplit, TokenArrays, token_store


class ParallelDataset(Dataset):
    """Tokenised (source, target) pairs; pairs longer than ``max_tokens`` on either side are dropped, or — with
    ``truncate_to`` (dev and test sets, which must keep every sentence) — cut to that many tokens, the last one kept
    (the end-of-sentence token), counted in ``truncated``.

    Sources and targets are encoded as the tokenizer's language setup says (:mod:`distilmt.data.languages`): an
    NLLB/M2M100 tokenizer puts its ``src_lang`` code before each source and its ``tgt_lang`` code before each label,
    a T5 prefix or an opus-mt target token goes before each source.

    The ids are flat arrays with offsets (:class:`~distilmt.data.store.TokenArrays`): for a split saved in a run
    directory (a :class:`~distilmt.data.store.TextSplit`) its memory-mapped token store, tokenised once per
    tokenizer; for pairs given as a list, the same arrays made in memory. Either way an item is built when it is
    read, so a dataset costs a few bytes per pair (its index and lengths) beyond the pages in use.

    With ``with_index=True`` each item also carries its position in the dataset as ``example_index`` (what a
    teacher cache is indexed by); the collator then puts it into the batch.
    """

    def __init__(self, pairs: Sequence[tuple[str, str]], tokenizer, max_tokens: int = 0, with_index: bool = False,
                 truncate_to: int = 0):
        self.with_index = with_index
        self.truncate_to = truncate_to
        self.tokens = token_store(pairs, tokenizer) if isinstance(pairs, TextSplit) else TokenArrays.encode(pairs,
                                                                                                          tokenizer)
        src_len, tgt_len = self.tokens.source_lengths(), self.tokens.target_lengths()
        keep = np.ones(len(src_len), dtype=bool)
        if max_tokens:
            keep = (src_len <= max_tokens) & (tgt_len <= max_tokens)
        self.dropped = int(len(keep) - keep.sum())
        self.index = np.flatnonzero(keep)  # dataset position -> pair number
        src_len, tgt_len = src_len[self.index], tgt_len[self.index]
        self.truncated = int(((src_len > truncate_to) | (tgt_len > truncate_to)).sum()) if truncate_to else 0
        if truncate_to:
            src_len, tgt_len = np.minimum(src_len, truncate_to), np.minimum(tgt_len, truncate_to)
        self._lengths = np.maximum(src_len, tgt_len).astype(np.int32)
        self._target_lengths = tgt_len.astype(np.int32)
        self.examples = _Examples(self)

    def __len__(self) -> int:
        return len(self.index)

    def example(self, index: int) -> dict:
        """``{"input_ids", "labels"}`` of example ``index`` (lists of ids, cut to ``truncate_to`` when set)."""
        pair = int(self.index[index])
        src, tgt = self.tokens.source(pair), self.tokens.target(pair)
        cut = self.truncate_to
        if cut and (len(src) > cut or len(tgt) > cut):
            src, tgt = (ids[: cut - 1] + ids[-1:] if len(ids) > cut else ids for ids in (src, tgt))
        return {"input_ids": src, "labels": tgt}

    def __getitem__(self, index: int) -> dict:
        if self.with_index:
            return {**self.example(index), "example_index": int(index)}
        return self.example(index)

    def lengths(self) -> np.ndarray:
        """Padded cost of each example: its longer side."""
        return self._lengths

    def target_lengths(self) -> np.ndarray:
        """Number of label tokens of each example."""
        return self._target_lengths

    def target_tokens(self) -> int:
        return int(self._target_lengths.sum())


class _Examples(Sequence):
    """``dataset.examples``: every example as a dict, built when read."""

    def __init__(self, dataset: ParallelDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self.dataset.example(i) for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.dataset.example(index)


def token_batches(lengths: Sequence[int], max_tokens: int, seed: int) -> list[list[int]]:
    """Group example indices into batches of at most ``max_tokens`` padded tokens (rows x longest).

    Examples are sorted by length with a seeded random tie-break, cut into batches, and the batch order is
    shuffled, so each batch holds similar lengths (little padding) while the order varies per seed.
    """
    return [batch.tolist() for batch in _token_batches(lengths, max_tokens, seed)]


def _token_batches(lengths: Sequence[int], max_tokens: int, seed: int) -> list[np.ndarray]:
    """:func:`token_batches` as int64 arrays: views of one index array, a few bytes per example."""
    rng = random.Random(seed)
    lengths = np.asarray(lengths, dtype=np.int64)
    ties = np.fromiter((rng.random() for _ in range(len(lengths))), dtype=np.float64, count=len(lengths))
    order = np.lexsort((ties, lengths))  # by length, ties broken by one draw per example in index order
    del ties
    sizes = [len(batch) for batch in pack_in_order(range(len(order)), lengths[order].tolist(), max_tokens)]
    batches = np.split(order, np.cumsum(sizes)[:-1]) if sizes else []
    rng.shuffle(batches)
    return batches


def pack_in_order(order: Sequence[int], lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Cut ``order`` into consecutive batches of at most ``max_tokens`` padded tokens (rows x longest)."""
    batches, current, longest = [], [], 0
    for index in order:
        longest_if_added = max(longest, lengths[index])
        if current and longest_if_added * (len(current) + 1) > max_tokens:
            batches.append(current)
            current, longest_if_added = [], lengths[index]
        current.append(index)
        longest = longest_if_added
    if current:
        batches.append(current)
    return batches


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Share of padded positions among all positions of the given batches."""
    real = sum(lengths[i] for batch in batches for i in batch)
    padded = sum(max(lengths[i] for i in batch) * len(batch) for batch in batches)
    return 1.0 - real / padded if padded else 0.0


class TokenBatchSampler:
    """A batch sampler for ``DataLoader(batch_sampler=...)``: token-budget batches, reshuffled each epoch.

    The order depends only on ``seed`` and the epoch set by the Trainer (``set_epoch``), so a resumed run
    sees exactly the batches the interrupted one would have seen. Under DDP, accelerate hands every
    process its own share of these batches.
    """

    def __init__(self, lengths: Sequence[int], max_tokens: int, seed: int = 0):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.max_tokens = max_tokens
        self.seed = seed
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def batches(self) -> list[np.ndarray]:
        if self._cache is None or self._cache[0] != self.epoch:
            self._cache = (self.epoch, _token_batches(self.lengths, self.max_tokens, self.seed * 100_003 + self.epoch))
        return self._cache[1]

    def __iter__(self):
        return (batch.tolist() for batch in self.batches())

    def __len__(self) -> int:
        return len(self.batches())


class Seq2SeqCollator:
    """Pads a list of examples; builds ``decoder_input_ids`` (labels shifted right) and masks pads with -100.

    Examples that carry an ``example_index`` (``ParallelDataset(..., with_index=True)``) give the batch an
    ``example_index`` tensor too; it is for the teacher signal, never passed to the model.
    """

    def __init__(self, pad_token_id: int, decoder_start_token_id: int):
        self.pad = pad_token_id
        self.start = decoder_start_token_id

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        n = len(examples)
        src_len = max(len(e["input_ids"]) for e in examples)
        tgt_len = max(len(e["labels"]) for e in examples)
        input_ids = torch.full((n, src_len), self.pad, dtype=torch.long)
        attention_mask = torch.zeros((n, src_len), dtype=torch.long)
        labels = torch.full((n, tgt_len), IGNORE_INDEX, dtype=torch.long)
        decoder_input_ids = torch.full((n, tgt_len), self.pad, dtype=torch.long)
        for row, example in enumerate(examples):
            src, tgt = example["input_ids"], example["labels"]
            input_ids[row, : len(src)] = torch.tensor(src)
            attention_mask[row, : len(src)] = 1
            labels[row, : len(tgt)] = torch.tensor(tgt)
            decoder_input_ids[row, 0] = self.start
            decoder_input_ids[row, 1 : len(tgt)] = torch.tensor(tgt[:-1])
        batch = {"input_ids": input_ids, "attention_mask": attention_mask,
                 "decoder_input_ids": decoder_input_ids, "labels": labels}
        if examples and "example_index" in examples[0]:
            batch["example_index"] = torch.tensor([e["example_index"] for e in examples], dtype=torch.long)
        return batch
