"""Deep mutual learning (Zhang et al. 2018): two students trained together in one Trainer.

:class:`MutualPair` holds both students as submodules so one optimizer, LR schedule, gradient clipping,
checkpointing and DDP wrapper train both. ``DistilTrainer.compute_loss`` gives each student its usual terms
(CE on the reference, KD to the teacher when there is one) plus ``mutual_weight * T^2 * KL(p_peer^T || p_self^T)``
with the peer detached (:func:`distilmt.losses.mutual_kl`). Generation (dev BLEU) and a plain ``forward`` use the
first student. Each student is saved as a plain Hugging Face model: the first in the output directory itself (so
a pipeline stage's directory stays a loadable student), the second, its peer, in ``peer/`` inside it.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from transformers import AutoModelForSeq2SeqLM

PEER = "peer"


PEER_STARTS = ("copy", "fresh")


def make_peer(student, start: str, seed: int):
    """The second student: ``copy`` starts it from the first one's initial weights (for a student derived from a
    teacher, the same teacher-derived weights; dropout and the mutual term make them diverge), ``fresh`` from an
    independent random initialisation (:func:`fresh_peer`, as in the DML paper)."""

    if start == "copy":
        return copy.deepcopy(student)
    if start == "fresh":
        return fresh_peer(student, seed)
    raise ValueError(f"distill.mutual_peer={start!r}: expected one of {', '.join(PEER_STARTS)}")


def fresh_peer(student, seed: int):
    """A second student of the same architecture, freshly initialised from ``seed`` (DML's independent peers),
    with the first one's generation settings."""

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        peer = type(student)(copy.deepcopy(student.config))
    peer.generation_config = copy.deepcopy(student.generation_config)
    return peer.to(student.device)


class MutualPair(torch.nn.Module):
    def __init__(self, first, second):
        super().__init__()
        self.first = first
        self.second = second

    @property
    def students(self):
        return self.first, self.second

    # What the Trainer and Seq2SeqTrainer read from their model: the first student's.
    @property
    def config(self):
        return self.first.config

    @property
    def generation_config(self):
        return self.first.generation_config

    @property
    def main_input_name(self) -> str:
        return self.first.main_input_name

    def forward(self, peer: bool = False, **inputs):
        """The first student's output; with ``peer=True`` both students' outputs ``(first, second)``."""
        if not peer:
            return self.first(**inputs)
        return self.first(**inputs), self.second(**inputs)

    def generate(self, *args, **kwargs):
        return self.first.generate(*args, **kwargs)

    @staticmethod
    def directories(directory) -> tuple[Path, Path]:
        return Path(directory), Path(directory) / PEER

    def save_pretrained(self, directory, tokenizer=None) -> list[Path]:
        """Each student as a plain Hugging Face directory: the first in ``directory``, its peer in ``directory/peer``."""
        paths = []
        for path, student in zip(self.directories(directory), self.students):
            student.save_pretrained(str(path))
            if tokenizer is not None:
                tokenizer.save_pretrained(str(path))
            paths.append(path)
        return paths

    def load_students(self, directory) -> None:
        """Load both students' weights back from a directory written by :meth:`save_pretrained` (a checkpoint)."""

        for path, student in zip(self.directories(directory), self.students):
            saved = AutoModelForSeq2SeqLM.from_pretrained(str(path))
            student.load_state_dict(saved.state_dict())
