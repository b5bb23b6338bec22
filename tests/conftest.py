"""Shared fixtures: a real (small) slice of the built-in corpus, a tokenizer trained on it, tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # as the CLI does: no "Writing model shards" bars
torch.set_num_threads(min(2, torch.get_num_threads()))

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

TINY_TEACHER = dict(d_model=32, encoder_layers=2, decoder_layers=2, ffn_dim=64, heads=4, dropout=0.0)


@pytest.fixture(scope="session")
def verse_pairs() -> list[tuple[str, str]]:
    """Short English-Hungarian verse pairs from the built-in corpus (real text, generated at run time)."""
    from distilmt.data.bible import aligned_verses

    verses, _ = aligned_verses()
    return [(v.en, v.hu) for v in verses if len(v.en.split()) <= 12][:1200]


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, verse_pairs) -> Path:
    from distilmt.data.tokenizer import train_tokenizer

    out = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer((t for pair in verse_pairs for t in pair), 400, out)
    return out


@pytest.fixture()
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


@pytest.fixture()
def tiny_teacher(tokenizer):
    from distilmt.config import TeacherConfig
    from distilmt.models.build import build_model

    return build_model(TeacherConfig(**TINY_TEACHER), tokenizer, seed=0)
