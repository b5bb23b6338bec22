"""Helpers shared by the test modules (tiny configs, tiny models, toy text); fixtures live in conftest.py."""

from __future__ import annotations

import json
import random
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch
import yaml
from transformers import M2M100Config, M2M100ForConditionalGeneration, MarianConfig, MarianMTModel, TrainerCallback

from distilmt.data.readers import write_tsv
from distilmt.data.tokenizer import train_tokenizer
from standins import train_a_little

TINY = {
    "name": "tiny",
    "data": {"corpus": "bible", "source_lang": "en", "target_lang": "hu", "vocab_size": 300, "max_tokens": 24,
             "max_train_pairs": 400, "max_eval_sentences": 8, "max_test_sentences": 12},
    "teacher": {"d_model": 32, "encoder_layers": 2, "decoder_layers": 2, "ffn_dim": 64, "heads": 4, "dropout": 0.0},
    "student": {"depth_ratio": 0.5, "width_ratio": 1.0},
    "teacher_train": {"max_steps": 6, "batch_tokens": 400, "warmup_steps": 1, "bf16": False},
    "student_train": {"max_steps": 4, "batch_tokens": 400, "warmup_steps": 1, "bf16": False},
    "eval": {"num_beams": 1, "batch_size": 8, "max_new_tokens": 16, "export_ct2": True, "speed_sentences": 4,
             "speed_rounds": 1, "speed_min_seconds": 0},  # one timing process per model: the rounds are tested in-process (test_evaluation)
    "monitor": {"sample_frequency": 2, "num_samples": 1},
}


def write_config(tmp_path: Path, **changes) -> Path:
    config = json.loads(json.dumps(TINY))
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        config.setdefault(section, {})[key] = value
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


HAS_CT2 = find_spec("ctranslate2") is not None


needs_ct2 = pytest.mark.skipif(not HAS_CT2, reason="ctranslate2 is not installed (pip install ctranslate2)")


WORDS = ("the cat dog bird fish sat ran sees eats on under near a red blue green big small old house tree river "
         "hill moon sun star stone water fire light night day").split()


def toy_sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))) for _ in range(n)]


def make_tiny_model(out_dir: Path, arch: str = "prenorm", d_model: int = 32, layers: int = 1, train_steps: int = 0,
                    tie: bool = True, seed: int = 0) -> Path:
    """A tiny MarianMT ('marian') or M2M100 ('prenorm') model + tokenizer saved in ``out_dir``.

    With ``train_steps`` it learns a little of a copy task, so its greedy outputs are varied, not noise.
    """

    torch.manual_seed(seed)
    texts = toy_sentences(48, seed)
    tok = train_tokenizer(texts, 200, out_dir)
    kwargs = dict(vocab_size=len(tok), d_model=d_model, encoder_layers=layers, decoder_layers=layers,
                  encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=2 * d_model,
                  decoder_ffn_dim=2 * d_model, max_position_embeddings=128, dropout=0.0,
                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
                  decoder_start_token_id=tok.eos_token_id, forced_eos_token_id=None, tie_word_embeddings=tie)
    if arch == "marian":
        model = MarianMTModel(MarianConfig(**kwargs))
    else:
        model = M2M100ForConditionalGeneration(M2M100Config(**kwargs))
    if train_steps:
        batch = tok(texts, text_target=texts, return_tensors="pt", padding=True)
        train_a_little(model, batch, tok.pad_token_id, train_steps)
    model.eval().save_pretrained(out_dir)
    return Path(out_dir)


def study_config(tmp_path: Path, pairs=None) -> Path:
    """test_pipeline's tiny run, on the conftest verse pairs as a user corpus when given (no second corpus build)."""
    path = write_config(tmp_path, eval__speed_sentences=0, eval__semantic=False, monitor__enabled=False)
    config = yaml.safe_load(path.read_text())
    if pairs is not None:
        write_tsv(pairs, tmp_path / "verses.tsv")
        config["data"].update(corpus=str(tmp_path / "verses.tsv"), dev_size=30, test_size=12)
    config.update(lora={"rank": 2, "alpha": 4, "teacher_steps": 3, "warmup_steps": 1},
                  study={"label_sources": 24, "student_pairs": 300},
                  seqkd={"num_beams": 2, "max_new_tokens": 12, "train_on": "mix", "shard_size": 10})
    path.write_text(yaml.safe_dump(config))
    return path


class Interrupt(TrainerCallback):
    """Raises KeyboardInterrupt at the end of step ``at_step`` (a training killed there)."""

    def __init__(self, at_step):
        self.at_step = at_step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at_step:
            raise KeyboardInterrupt
