"""Build, load and derive standard `transformers` encoder-decoder models.

Everything here produces plain Hugging Face models (MarianMT or M2M100 classes) that `transformers`
loads without distilmt. The student is derived from the teacher's own config class, so a MarianMT,
M2M100/NLLB, BART-family or T5 teacher gets a student of the same family.
"""

from __future__ import annotations

import copy
import re

import torch
from transformers import AutoModelForSeq2SeqLM, M2M100Config, MarianConfig

from ..config import StudentConfig, TeacherConfig
from .shapes import named_shape

# Attribute names of depth/width/heads in the config families we derive students for.
_BART_LIKE = {"d_model": "d_model", "enc": "encoder_layers", "dec": "decoder_layers",
              "ffn": ("encoder_ffn_dim", "decoder_ffn_dim"), "heads": ("encoder_attention_heads", "decoder_attention_heads")}
_T5_LIKE = {"d_model": "d_model", "enc": "num_layers", "dec": "num_decoder_layers", "ffn": ("d_ff",), "heads": ("num_heads",)}


def _names(config) -> dict:
    return _T5_LIKE if hasattr(config, "num_decoder_layers") and hasattr(config, "d_ff") else _BART_LIKE


def seq2seq_config(cfg: TeacherConfig, tokenizer):
    """A transformers config for a model trained here: pre-norm (M2M100 class) or post-norm (MarianMT)."""

    common = dict(
        vocab_size=len(tokenizer), d_model=cfg.d_model,
        encoder_layers=cfg.encoder_layers, decoder_layers=cfg.decoder_layers,
        encoder_ffn_dim=cfg.ffn_dim, decoder_ffn_dim=cfg.ffn_dim,
        encoder_attention_heads=cfg.heads, decoder_attention_heads=cfg.heads,
        dropout=cfg.dropout, attention_dropout=0.0, activation_dropout=0.0,
        encoder_layerdrop=0.0, decoder_layerdrop=0.0,  # M2M100 defaults to 0.05; it leaves DDP params unused
        max_position_embeddings=512, scale_embedding=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id, decoder_start_token_id=tokenizer.eos_token_id,
        forced_eos_token_id=None,
    )
    if cfg.arch == "marian":
        return MarianConfig(**common, activation_function="swish", share_encoder_decoder_embeddings=True)
    return M2M100Config(**common, activation_function="relu", tie_word_embeddings=True)


def build_model(cfg: TeacherConfig, tokenizer, seed: int = 0):
    """A freshly initialised encoder-decoder for a teacher trained from scratch."""

    torch.manual_seed(seed)
    model = AutoModelForSeq2SeqLM.from_config(seq2seq_config(cfg, tokenizer))
    _set_generation_defaults(model, tokenizer)
    return model


def _set_generation_defaults(model, tokenizer) -> None:
    gen = model.generation_config
    gen.decoder_start_token_id = model.config.decoder_start_token_id
    gen.pad_token_id = tokenizer.pad_token_id
    gen.eos_token_id = tokenizer.eos_token_id
    gen.forced_eos_token_id = None
    gen.forced_bos_token_id = None
    gen.bos_token_id = tokenizer.bos_token_id
    gen.max_length = 256
    gen.num_beams = 1
    gen.bad_words_ids = None


def student_shape(teacher_config, cfg: StudentConfig) -> dict:
    """Depth, width and heads of a student: the named ``cfg.shape`` (:mod:`distilmt.models.shapes`), else derived
    from the teacher config by the configured ratios."""
    if cfg.shape:
        return named_shape(cfg.shape)
    names = _names(teacher_config)
    t_d = getattr(teacher_config, names["d_model"])
    t_heads = getattr(teacher_config, names["heads"][0])
    t_ffn = getattr(teacher_config, names["ffn"][0])
    heads = max(1, round(t_heads * cfg.heads_ratio))
    d_model = max(heads, round(t_d * cfg.width_ratio / heads) * heads)
    ffn = max(1, round(t_ffn * cfg.width_ratio))
    dec_ratio = cfg.decoder_depth_ratio or cfg.depth_ratio
    return {
        "d_model": d_model, "ffn": ffn, "heads": heads,
        "enc": max(1, round(getattr(teacher_config, names["enc"]) * cfg.depth_ratio)),
        "dec": max(1, round(getattr(teacher_config, names["dec"]) * dec_ratio)),
    }


def spread_layers(n_teacher: int, n_student: int) -> list[int]:
    """Teacher layer index copied into each student layer: first and last kept, the rest evenly spread."""
    if n_student == 1:
        return [n_teacher - 1]
    return [round(i * (n_teacher - 1) / (n_student - 1)) for i in range(n_student)]


_LAYER = re.compile(r"(encoder|decoder)\.(layers|block)\.(\d+)\.")


def derive_student(teacher, cfg: StudentConfig, seed: int = 0):
    """A smaller model of the teacher's family, initialised from the teacher when ``cfg.init_from_teacher``.

    With equal width ("shrink and fine-tune"), the student copies the teacher's embeddings, final norms
    and a spread-out subset of its layers (first and last included). A narrower student takes evenly spaced entries
    of those same tensors (``cfg.narrow_init == "select"``, the default: :func:`select_weights`) or is freshly
    initialised (``"random"``); a wider one (a named shape wider than its teacher) is freshly initialised.
    """

    names = _names(teacher.config)
    shape = student_shape(teacher.config, cfg)
    config = copy.deepcopy(teacher.config)
    setattr(config, names["d_model"], shape["d_model"])
    setattr(config, names["enc"], shape["enc"])
    setattr(config, names["dec"], shape["dec"])
    for attr in names["ffn"]:
        setattr(config, attr, shape["ffn"])
    for attr in names["heads"]:
        setattr(config, attr, shape["heads"])
    if hasattr(config, "num_hidden_layers") and "num_hidden_layers" not in getattr(config, "attribute_map", {}):
        config.num_hidden_layers = shape["enc"]
    torch.manual_seed(seed)
    student = AutoModelForSeq2SeqLM.from_config(config)
    student.generation_config = copy.deepcopy(teacher.generation_config)
    teacher_width = getattr(teacher.config, names["d_model"])
    if cfg.init_from_teacher and shape["d_model"] == teacher_width:
        copy_teacher_weights(teacher, student, shape)
    elif cfg.init_from_teacher and cfg.narrow_init == "select" and shape["d_model"] < teacher_width:
        copy_teacher_weights(teacher, student, shape, select=True)
    return student


def select_weights(teacher_tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
    """The entries of ``teacher_tensor`` at evenly spaced indices along every axis where ``shape`` is smaller
    (index ``i * t // s`` of ``t`` for student position ``i`` of ``s``), or None if ``shape`` cannot be cut from it.

    Weight selection (Xu et al., "Initializing Models with Larger Ones", ICLR 2024): the indices depend only on the
    two sizes, so the residual stream keeps the same teacher dimensions in every embedding, projection and norm of
    every layer; with the same number of heads, a head's dimensions come from that same head (head size t/s times
    smaller, every (t/s)-th dimension). Position tables are not selected (a sinusoidal one depends on the width).
    """
    if teacher_tensor.dim() != len(shape) or any(s > t for s, t in zip(shape, teacher_tensor.shape)):
        return None
    out = teacher_tensor
    for axis, (s, t) in enumerate(zip(shape, teacher_tensor.shape)):
        if s < t:
            out = out.index_select(axis, torch.arange(s) * t // s)
    return out


def copy_teacher_weights(teacher, student, shape: dict, select: bool = False) -> int:
    """Copy every teacher tensor whose (layer-remapped) name and shape exist in the student; returns count.
    With ``select``, a teacher tensor larger than the student's is cut to it by :func:`select_weights`."""
    enc_t = getattr(teacher.config, _names(teacher.config)["enc"])
    dec_t = getattr(teacher.config, _names(teacher.config)["dec"])
    source_layer = {
        "encoder": spread_layers(enc_t, shape["enc"]),
        "decoder": spread_layers(dec_t, shape["dec"]),
    }
    teacher_state = teacher.state_dict()
    student_state = student.state_dict()
    copied = 0
    with torch.no_grad():
        for name, tensor in student_state.items():
            match = _LAYER.search(name)
            src_name = name
            if match:
                side, kind, idx = match.group(1), match.group(2), int(match.group(3))
                src_name = name.replace(match.group(0), f"{side}.{kind}.{source_layer[side][idx]}.", 1)
            src = teacher_state.get(src_name)
            if src is not None and select and src.shape != tensor.shape:
                # a sinusoidal position table (Marian) is a function of the width: the student keeps its own
                src = None if "embed_positions" in name else select_weights(src, tensor.shape)
            if src is not None and src.shape == tensor.shape:
                tensor.copy_(src)
                copied += 1
    return copied


