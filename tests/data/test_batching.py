import torch

from distilmt.data.batching import ParallelDataset, Seq2SeqCollator, TokenBatchSampler, padding_fraction, token_batches


def test_token_batches_respect_budget_cover_everything_and_pad_little():
    import random

    rng = random.Random(0)
    lengths = [rng.randint(3, 60) for _ in range(3000)]
    batches = token_batches(lengths, max_tokens=1000, seed=1)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(lengths)))
    assert all(max(lengths[i] for i in b) * len(b) <= 1000 for b in batches)
    naive = [list(range(i, min(i + 30, len(lengths)))) for i in range(0, len(lengths), 30)]
    assert padding_fraction(lengths, batches) < 0.05 < padding_fraction(lengths, naive)


def test_sampler_order_depends_only_on_seed_and_epoch():
    lengths = list(range(1, 200))
    a, b = TokenBatchSampler(lengths, 300, seed=3), TokenBatchSampler(lengths, 300, seed=3)
    a.set_epoch(2); b.set_epoch(2)
    assert list(a) == list(b)
    b.set_epoch(3)
    assert list(a) != list(b)


def test_collator_shifts_targets_and_masks_pads(tokenizer, verse_pairs):
    data = ParallelDataset(verse_pairs[:3], tokenizer)
    batch = Seq2SeqCollator(tokenizer.pad_token_id, tokenizer.eos_token_id)([data[0], data[1], data[2]])
    labels, dec = batch["labels"], batch["decoder_input_ids"]
    assert (dec[:, 0] == tokenizer.eos_token_id).all()
    for row in range(3):
        n = len(data[row]["labels"])
        assert labels[row, :n].tolist() == data[row]["labels"]
        assert (labels[row, n:] == -100).all()
        assert dec[row, 1:n].tolist() == data[row]["labels"][:-1]
        assert batch["attention_mask"][row].sum().item() == len(data[row]["input_ids"])
    assert batch["input_ids"].dtype == torch.long


def test_dataset_drops_pairs_longer_than_max_tokens(tokenizer, verse_pairs):
    full = ParallelDataset(verse_pairs[:200], tokenizer)
    short = ParallelDataset(verse_pairs[:200], tokenizer, max_tokens=12)
    assert len(short) + short.dropped == len(full) and short.dropped > 0
    assert max(short.lengths()) <= 12
