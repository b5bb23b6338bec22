"""Hidden-state and attention distillation (issue 6, methods 3 and 4): which layers meet, and the adapters.

The loss maths are the pure functions in :mod:`distilmt.losses` (``hidden_state_mse``, ``attention_kl``...);
this module decides which student layer faces which teacher layer (:func:`layer_map`), holds the learned linear
adapters that lift the student's width to the teacher's, and adds the per-layer sums up. The trainer owns the
rest (optimizer, checkpoints, normalisation): see :class:`distilmt.training.trainer.DistilTrainer`.

Layer ``i`` is the output of transformer layer ``i`` (0-based): ``hidden_states[i + 1]`` of a Hugging Face
model, whose entry 0 is the embeddings and whose last entry is after the final layer norm, if any.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config.distill import DistillConfig
from ..errors import ConfigError
from ..losses import ATTENTION_LOSSES, HIDDEN_LOSSES, match_heads


def layer_map(spec, n_student: int, n_teacher: int, where: str = "distill.hidden_layer_map") -> list[tuple[int, int]]:
    """``[(student_layer, teacher_layer), ...]`` (0-based) for a map given as

    - ``uniform``: student layer i faces teacher layer ``round((i + 1) * n_teacher / n_student) - 1``, so the last
      faces the last (2 student, 6 teacher layers: (0, 2), (1, 5));
    - ``last`` / ``last:K``: the last K student layers face the last K teacher layers, in order;
    - a list of ``[student_layer, teacher_layer]`` pairs, used as given (checked against the depths).
    """
    if spec == "uniform":
        return [(i, max(int((i + 1) * n_teacher / n_student + 0.5) - 1, 0)) for i in range(n_student)]
    if isinstance(spec, str) and (spec == "last" or spec.startswith("last:")):
        k = int(spec[5:]) if spec.startswith("last:") else 1
        if k > min(n_student, n_teacher):
            raise ConfigError(f"{where}: {spec} asks for {k} layers but the student has {n_student} and the teacher "
                              f"{n_teacher}; use last:{min(n_student, n_teacher)} or fewer")
        return [(n_student - k + j, n_teacher - k + j) for j in range(k)]
    pairs = [(int(s), int(t)) for s, t in spec]
    for s, t in pairs:
        if not (0 <= s < n_student and 0 <= t < n_teacher):
            raise ConfigError(f"{where}: pair [{s}, {t}] is out of range: the student has layers 0..{n_student - 1} "
                              f"and the teacher 0..{n_teacher - 1} here")
    return pairs


def model_shape(config) -> dict:
    """Width, depths and head counts of a seq2seq config (BART/Marian/M2M100 or T5 attribute names)."""
    if hasattr(config, "num_decoder_layers") and hasattr(config, "d_ff"):  # T5 family
        return {"width": config.d_model, "encoder": config.num_layers, "decoder": config.num_decoder_layers,
                "encoder_heads": config.num_heads, "decoder_heads": config.num_heads}
    return {"width": config.d_model, "encoder": config.encoder_layers, "decoder": config.decoder_layers,
            "encoder_heads": config.encoder_attention_heads, "decoder_heads": config.decoder_attention_heads}


# attention kind -> (output field, side whose depth and heads it has, mask of its queries)
_ATTENTIONS = {"encoder": ("encoder_attentions", "encoder"), "decoder": ("decoder_attentions", "decoder"),
               "cross": ("cross_attentions", "decoder")}


class IntermediateKD(nn.Module):
    """The hidden-state and attention terms for one student/teacher pair; its parameters are the adapters.

    ``hidden_sum`` and ``attention_sum`` return loss sums over real positions: for each side (or attention
    kind), the per-position distance averaged over the mapped layer pairs, summed over positions; the sides
    are added. The trainer divides them by the global target-token count, like the CE and KD sums.
    """

    def __init__(self, distill: DistillConfig, student_config, teacher_config):
        super().__init__()
        self.distill = distill
        student, teacher = model_shape(student_config), model_shape(teacher_config)
        for who, config in (("student", student_config), ("teacher", teacher_config)):
            if any(getattr(config, k, 0) for k in ("encoder_layerdrop", "decoder_layerdrop")):
                raise ConfigError(f"distill.hidden_weight/attention_weight: the {who} drops layers at random "
                                  "(LayerDrop), so its layers cannot be mapped; set encoder_layerdrop and "
                                  "decoder_layerdrop to 0 in its config.json")
        self.hidden_pairs: dict[str, list[tuple[int, int]]] = {}
        if distill.hidden_weight > 0:
            for side in distill.split("hidden_sides"):
                spec = _for_side(distill.hidden_layer_map, side)
                if spec is None:
                    continue
                self.hidden_pairs[side] = layer_map(spec, student[side], teacher[side], "distill.hidden_layer_map")
        self.attention_pairs: dict[str, list[tuple[int, int]]] = {}
        if distill.attention_weight > 0:
            for kind in distill.split("attention_kinds"):
                side = _ATTENTIONS[kind][1]
                spec = _for_side(distill.attention_layer_map, side)
                if spec is None:
                    continue
                hs, ht = student[f"{side}_heads"], teacher[f"{side}_heads"]
                if max(hs, ht) % min(hs, ht):
                    raise ConfigError(f"distill.attention_weight: the {side} has {hs} student and {ht} teacher "
                                      "attention heads; one count must divide the other to average or repeat heads "
                                      "(or leave the attention out of distill.attention_kinds)")
                self.attention_pairs[kind] = layer_map(spec, student[side], teacher[side], "distill.attention_layer_map")
        self.depth = {"student": student, "teacher": teacher}
        # One adapter per mapped pair when widths differ (nn.Linear student_width -> teacher_width).
        self.adapters = nn.ModuleDict()
        if student["width"] != teacher["width"]:
            for side, pairs in self.hidden_pairs.items():
                for s, t in pairs:
                    self.adapters[f"{side}_{s}_{t}"] = nn.Linear(student["width"], teacher["width"])

    @property
    def needs_hidden(self) -> bool:
        return bool(self.hidden_pairs)

    @property
    def needs_attentions(self) -> bool:
        return bool(self.attention_pairs)

    def _states(self, outputs, side: str, who: str) -> tuple[torch.Tensor, ...]:
        states = getattr(outputs, f"{side}_hidden_states", None)
        expected = self.depth[who][side] + 1
        if states is None or len(states) != expected:
            raise RuntimeError(f"the {who} returned {0 if states is None else len(states)} {side} hidden states, "
                               f"expected {expected} (layers + embeddings): was output_hidden_states=True passed?")
        return states

    def hidden_sum(self, student_out, teacher_out, source_mask: torch.Tensor,
                   target_mask: torch.Tensor) -> torch.Tensor:
        """Sum over sides of the mean over mapped layer pairs of ``distill.hidden_loss`` (adapters lift the
        student's width to the teacher's where they differ)."""
        loss = HIDDEN_LOSSES[self.distill.hidden_loss]

        def pair_sum(side: str, s: int, t: int) -> torch.Tensor:
            h_s = self._states(student_out, side, "student")[s + 1]
            key = f"{side}_{s}_{t}"
            if key in self.adapters:
                h_s = self.adapters[key](h_s.to(self.adapters[key].weight.dtype))
            mask = source_mask if side == "encoder" else target_mask
            return loss(h_s, self._states(teacher_out, side, "teacher")[t + 1].detach(), mask)[0]

        return _mean_over_pairs(self.hidden_pairs, pair_sum, source_mask.device)

    def attention_sum(self, student_out, teacher_out, source_mask: torch.Tensor,
                      target_mask: torch.Tensor) -> torch.Tensor:
        """Sum over attention kinds of the mean over mapped layer pairs of ``distill.attention_loss``, heads
        matched by ``distill.attention_heads``."""
        loss = ATTENTION_LOSSES[self.distill.attention_loss]
        for kind in self.attention_pairs:
            field, side = _ATTENTIONS[kind]
            for who, out in (("student", student_out), ("teacher", teacher_out)):
                maps = getattr(out, field, None)
                if not maps or len(maps) != self.depth[who][side] or maps[0] is None:
                    raise RuntimeError(f"the {who} returned no {field} for every layer: attention KD needs "
                                       "output_attentions=True and eager attention (attn_implementation='eager')")

        def pair_sum(kind: str, s: int, t: int) -> torch.Tensor:
            field = _ATTENTIONS[kind][0]
            a_s, a_t = match_heads(getattr(student_out, field)[s], getattr(teacher_out, field)[t].detach(),
                                   self.distill.attention_heads)
            return loss(a_s, a_t, source_mask if kind == "encoder" else target_mask)[0]

        return _mean_over_pairs(self.attention_pairs, pair_sum, source_mask.device)


def _mean_over_pairs(pairs_by_key: dict, pair_sum, device) -> torch.Tensor:
    """``sum over keys of (1 / |pairs|) sum over (s, t) pairs of pair_sum(key, s, t)``, in pair order."""
    total = torch.zeros((), device=device)
    for key, pairs in pairs_by_key.items():
        key_sum = torch.zeros((), device=device)
        for s, t in pairs:
            key_sum = key_sum + pair_sum(key, s, t)
        total = total + key_sum / len(pairs)
    return total


def _for_side(spec, side: str):
    """The map of one side; None when a per-side map leaves that side out (no term there)."""
    if isinstance(spec, dict):
        return spec.get(side)
    return spec


__all__ = ["IntermediateKD", "layer_map", "model_shape"]
