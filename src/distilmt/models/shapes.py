"""Named student shapes drawn from production MT students, for ``student.shape``.

The figures are those of the student configurations of Mozilla's Firefox Translations training pipeline
(github.com/mozilla/translations, ``pipeline/train/configs/model/student.*.yml``, themselves from Bergamot's
browsermt/students): ``dim-emb``, ``transformer-dim-ffn``, ``transformer-heads``, ``enc-depth``, ``dec-depth``.
Those students decode with an SSRU (a simplified recurrent unit) instead of decoder self-attention; here the decoder
layers are the teacher family's standard ones, so the shape (width, depth, heads) is the same and the decoder is a
little larger and slower than theirs. Their vocabularies are 32k SentencePiece pieces trained for the student's
language pair: here ``student.trim_vocab`` (:mod:`distilmt.models.trim`) plays that part, keeping the teacher's
pieces that the training corpus uses.

A shape replaces the ratios (``student.depth_ratio``, ``width_ratio``, ...): the student has exactly these
dimensions whatever the teacher's. When it is narrower than the teacher, ``student.narrow_init: select`` (the
default) initialises it by weight selection from the teacher's spread-out layers; when it is wider, it starts from
random weights (see :func:`distilmt.models.build.derive_student`).
"""

from __future__ import annotations

import dataclasses

from ..config import STUDENT_SHAPES
from ..errors import ConfigError


@dataclasses.dataclass(frozen=True)
class NamedShape:
    d_model: int
    ffn: int
    heads: int
    enc: int
    dec: int
    origin: str

    def as_dict(self) -> dict:
        """The shape as :func:`distilmt.models.build.student_shape` returns it."""
        return {"d_model": self.d_model, "ffn": self.ffn, "heads": self.heads, "enc": self.enc, "dec": self.dec}


_SOURCE = "mozilla/translations pipeline/train/configs/model/"
SHAPES = {
    "tiny": NamedShape(256, 1536, 8, 6, 2, _SOURCE + "student.tiny.yml (browsermt student.tiny11)"),
    "base-memory": NamedShape(384, 1536, 8, 6, 4, _SOURCE + "student.base-memory.yml"),
    "base": NamedShape(512, 2048, 8, 6, 2, _SOURCE + "student.base.yml (browsermt student.base)"),
}
"""d_model, FFN width, attention heads, encoder and decoder layers of each named student."""

assert set(SHAPES) == set(STUDENT_SHAPES) - {""}, "config.sections.STUDENT_SHAPES and SHAPES must name the same shapes"


def named_shape(name: str) -> dict:
    """``{"d_model", "ffn", "heads", "enc", "dec"}`` of the named student shape."""
    if name not in SHAPES:
        raise ConfigError(f"student.shape: '{name}' is not one of {', '.join(SHAPES)}")
    return SHAPES[name].as_dict()
