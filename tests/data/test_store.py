"""The memory-mapped data path: lazy splits, the token store, streaming dedup/held-out checks, and the trainer's
dataset built from the store equal to the one built from pairs in memory."""

from __future__ import annotations

import random

import numpy as np
import pytest

from distilmt.config import DataConfig
from distilmt.data import store
from distilmt.data.batching import ParallelDataset
from distilmt.data.corpus import build_splits, load_splits, prepare_data
from distilmt.data.languages import source_ids
from distilmt.data.store import TextSplit, store_dir, token_store, write_split
from distilmt.errors import CorpusError


def old_dataset(pairs, tokenizer, max_tokens=0):
    """What ParallelDataset held before the token store: a list of dicts, over-long pairs dropped."""
    sources = source_ids(tokenizer, [s for s, _ in pairs])
    targets = tokenizer(text_target=[t for _, t in pairs])["input_ids"]
    kept = [{"input_ids": s, "labels": t} for s, t in zip(sources, targets)
            if not max_tokens or (len(s) <= max_tokens and len(t) <= max_tokens)]
    return kept, len(pairs) - len(kept)


def test_text_split_round_trips_real_text(tmp_path, verse_pairs):
    pairs = verse_pairs[:300]
    assert write_split(pairs, tmp_path / "train.tsv") == 300
    split = TextSplit(tmp_path / "train.tsv")
    assert len(split) == 300 and split[0] == pairs[0] and split[-1] == pairs[-1] and split[17] == pairs[17]
    assert split[10:13] == pairs[10:13] and list(split) == pairs
    assert split == pairs and pairs == split and split != pairs[:-1]
    assert split.offsets[-1] == (tmp_path / "train.tsv").stat().st_size
    with pytest.raises(IndexError):
        split[300]
    (tmp_path / "train.index.npy").unlink()  # a directory prepared before there were indexes: rebuilt from the file
    assert TextSplit(tmp_path / "train.tsv")[299] == pairs[299] and (tmp_path / "train.index.npy").is_file()


def test_token_store_holds_the_tokenizers_ids_and_is_built_once(tmp_path, verse_pairs, tokenizer, monkeypatch):
    pairs = verse_pairs[:200]
    write_split(pairs, tmp_path / "train.tsv")
    split = TextSplit(tmp_path / "train.tsv")
    tokens = token_store(split, tokenizer)
    expected, _ = old_dataset(pairs, tokenizer)
    assert isinstance(tokens.src, np.memmap) and len(tokens) == 200 and tokens.src.dtype == np.uint16
    for i in (0, 57, 199):
        assert tokens.source(i) == expected[i]["input_ids"] and tokens.target(i) == expected[i]["labels"]
    out = store_dir(split, tokenizer)
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "src.bin", "src.index.npy", "tgt.bin",
                                                     "tgt.index.npy"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(store, "_build", lambda *a: pytest.fail("a complete token store was built again"))
    again = token_store(TextSplit(tmp_path / "train.tsv"), tokenizer)
    assert again.target(57) == expected[57]["labels"]


def test_token_store_is_rebuilt_for_a_new_split_and_refuses_a_damaged_one(tmp_path, verse_pairs, tokenizer):
    write_split(verse_pairs[:50], tmp_path / "train.tsv")
    token_store(TextSplit(tmp_path / "train.tsv"), tokenizer)
    write_split(verse_pairs[50:90], tmp_path / "train.tsv")  # prepared again: the old store no longer fits
    split = TextSplit(tmp_path / "train.tsv")
    assert token_store(split, tokenizer).source(0) == source_ids(tokenizer, [verse_pairs[50][0]])[0]
    (store_dir(split, tokenizer) / "tgt.bin").write_bytes(b"\0\0")
    with pytest.raises(CorpusError, match=r"tokens-.*damaged .*delete this directory"):
        token_store(split, tokenizer)


def test_dataset_from_the_store_equals_the_in_memory_one(tmp_path, verse_pairs, tokenizer):
    pairs = verse_pairs[:300]
    write_split(pairs, tmp_path / "train.tsv")
    expected, dropped = old_dataset(pairs, tokenizer, max_tokens=20)
    assert dropped > 0
    for data in (ParallelDataset(TextSplit(tmp_path / "train.tsv"), tokenizer, 20, with_index=True),
                 ParallelDataset(pairs, tokenizer, 20, with_index=True)):
        assert data.dropped == dropped and len(data) == len(expected)
        assert [data[i]["example_index"] for i in range(len(data))] == list(range(len(expected)))
        assert [{k: data[i][k] for k in ("input_ids", "labels")} for i in range(len(data))] == expected
        assert list(data.lengths()) == [max(len(e["input_ids"]), len(e["labels"])) for e in expected]
        assert data.target_tokens() == sum(len(e["labels"]) for e in expected)


def test_dev_set_truncation_matches_cutting_the_lists(verse_pairs, tokenizer):
    pairs = verse_pairs[:100]
    data = ParallelDataset(pairs, tokenizer, 0, truncate_to=8)
    full, _ = old_dataset(pairs, tokenizer)
    cut = [[*ids[:7], ids[-1]] if len(ids) > 8 else ids for e in full for ids in (e["input_ids"], e["labels"])]
    assert [ids for e in data.examples for ids in (e["input_ids"], e["labels"])] == cut
    assert data.truncated == sum(len(e["input_ids"]) > 8 or len(e["labels"]) > 8 for e in full) > 0
    assert max(data.lengths()) == 8


def naive_splits(pairs, held_sources):
    """The reference the streaming pass must equal: distinct pairs in order, held-out sources removed."""
    distinct = list(dict.fromkeys(pairs))
    return [p for p in distinct if p[0] not in held_sources], len(pairs) - len(distinct)


def test_streaming_dedup_and_held_out_check_on_real_text(tmp_path, verse_pairs):
    rng = random.Random(5)
    base = verse_pairs[:400]
    corpus = base + [rng.choice(base) for _ in range(60)]  # exact duplicates
    corpus += [(base[i][0], f"another translation {i}") for i in range(0, 400, 40)]  # a source twice, other target
    rng.shuffle(corpus)
    (tmp_path / "c.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in corpus), encoding="utf-8")
    held = base[:30]
    (tmp_path / "test.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in held), encoding="utf-8")
    cfg = DataConfig(corpus=str(tmp_path / "c.tsv"), test_file=str(tmp_path / "test.tsv"), dev_size=20)
    splits = build_splits(cfg)
    assert not {s for s, _ in splits.train} & ({s for s, _ in splits.dev} | {s for s, _ in held})
    train, duplicates = naive_splits(corpus, {s for s, _ in splits.dev} | {s for s, _ in held})
    assert splits.train == train and splits.test == held and len(splits.dev) == 20
    assert splits.stats["duplicates_dropped"] == duplicates > 0
    assert splits.stats["train_dropped_overlap"] > 30  # held-out sources, with every other target they had
    prepared = prepare_data(cfg, tmp_path / "data")  # the same splits, train streamed to disk and read lazily
    assert isinstance(prepared.train, TextSplit) and prepared.train == splits.train
    assert prepared == load_splits(tmp_path / "data") and prepared.dev == splits.dev
