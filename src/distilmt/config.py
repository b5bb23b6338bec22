"""Typed configuration: one dataclass per concern, validated on construction.

A preset (``presets/*.yaml``) is a serialised :class:`RunConfig`. Every field has a help text
(``field(metadata={"help": ...})``) and every user mistake is reported as one :class:`ConfigError`
sentence naming the field and what to do.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

PRESET_DIR = Path(__file__).parent / "presets"
PRESETS = ("quick", "conservative", "balanced", "aggressive", "quality")


class ConfigError(ValueError):
    """A configuration value a user has to change; the message names the field."""


def _help(text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING):
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


def _check(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{where}: {message}")


@dataclass
class DataConfig:
    corpus: str = _help("'bible' for the built-in en-hu corpus, or a path: a .tsv file, a .jsonl file, "
                        "or the prefix of two aligned files PREFIX.SRC / PREFIX.TGT", "bible")
    source_lang: str = _help("source language code (for the built-in corpus: en or hu)", "en")
    target_lang: str = _help("target language code", "hu")
    format: str = _help("corpus format: auto, tsv, plain, jsonl", "auto")
    src_field: str = _help("JSONL field holding the source sentence (default: source_lang)", "")
    tgt_field: str = _help("JSONL field holding the target sentence (default: target_lang)", "")
    dev_file: str = _help("optional dev corpus (same format); default: held out from the corpus", "")
    test_file: str = _help("optional test corpus (same format); default: held out from the corpus", "")
    dev_size: int = _help("sentences held out for dev when no dev_file is given (user corpora)", 500)
    test_size: int = _help("sentences held out for test when no test_file is given (user corpora)", 1000)
    skip_bad_lines: bool = _help("skip malformed lines (counted and reported) instead of stopping", False)
    vocab_size: int = _help("joint subword vocabulary size of a tokenizer trained here", 4000)
    max_tokens: int = _help("drop training pairs longer than this many subword tokens on either side", 64)
    max_train_pairs: int = _help("use at most this many training pairs (0 = all)", 0)
    max_eval_sentences: int = _help("dev sentences used for BLEU during training (0 = all)", 300)
    max_test_sentences: int = _help("test sentences used in the final evaluation (0 = all)", 0)

    def __post_init__(self):
        _check(self.format in ("auto", "tsv", "plain", "jsonl"), "data.format",
               f"'{self.format}' is not one of auto, tsv, plain, jsonl")
        _check(self.source_lang != self.target_lang, "data.source_lang",
               f"source and target are both '{self.source_lang}'; set data.target_lang to the other language")
        if self.corpus == "bible":
            _check({self.source_lang, self.target_lang} == {"en", "hu"}, "data.source_lang",
                   "the built-in corpus is English-Hungarian: use en/hu or hu/en, or point data.corpus at your files")
        _check(self.vocab_size >= 100, "data.vocab_size", f"{self.vocab_size} is too small; use at least 100")
        _check(self.max_tokens >= 4, "data.max_tokens", "must be at least 4")
        for name in ("dev_size", "test_size", "max_train_pairs", "max_eval_sentences", "max_test_sentences"):
            _check(getattr(self, name) >= 0, f"data.{name}", "must not be negative")

    @property
    def direction(self) -> str:
        return f"{self.source_lang}-{self.target_lang}"


MODEL_KINDS = ("seq2seq", "causal")


@dataclass
class TeacherConfig:
    path: str = _help("a local Hugging Face seq2seq model directory to use as the teacher; empty = train one here", "")
    arch: str = _help("architecture of a teacher trained here: 'prenorm' (M2M100-style pre-LayerNorm) or "
                      "'marian' (MarianMT, post-LayerNorm)", "prenorm")
    d_model: int = _help("hidden width", 256)
    encoder_layers: int = _help("encoder depth", 3)
    decoder_layers: int = _help("decoder depth", 3)
    ffn_dim: int = _help("feed-forward width", 1024)
    heads: int = _help("attention heads", 4)
    dropout: float = _help("dropout", 0.1)
    kind: str = _help("seq2seq (an encoder-decoder, loaded from path or trained here) or causal (a causal LM such "
                      "as Qwen2 loaded from path and prompted with prompt.template)", "seq2seq")

    def __post_init__(self):
        _check(self.kind in MODEL_KINDS, "teacher.kind", f"'{self.kind}' is not seq2seq or causal")
        _check(self.kind != "causal" or bool(self.path), "teacher.path",
               "a causal-LM teacher is loaded, not trained here: set teacher.path to its local directory")
        _check(self.arch in ("prenorm", "marian"), "teacher.arch", f"'{self.arch}' is not prenorm or marian")
        _check(self.d_model > 0 and self.d_model % max(self.heads, 1) == 0, "teacher.d_model",
               f"{self.d_model} must be a positive multiple of teacher.heads ({self.heads})")
        for name in ("encoder_layers", "decoder_layers", "ffn_dim", "heads"):
            _check(getattr(self, name) >= 1, f"teacher.{name}", "must be at least 1")
        _check(0 <= self.dropout < 1, "teacher.dropout", "must be in [0, 1)")


@dataclass
class StudentConfig:
    depth_ratio: float = _help("student layers = round(teacher layers x ratio), at least 1", 0.67)
    width_ratio: float = _help("student d_model and ffn = teacher's x ratio (rounded to a multiple of heads)", 1.0)
    heads_ratio: float = _help("student heads = teacher heads x ratio, at least 1", 1.0)
    decoder_depth_ratio: float = _help("decoder depth ratio (default: depth_ratio); a shallow decoder is fastest", 0.0)
    init_from_teacher: bool = _help("when widths match, copy embeddings and a spread-out subset of teacher "
                                    "layers into the student (shrink and fine-tune)", True)
    kind: str = _help("seq2seq (derived from the teacher by the ratios above) or causal (a causal LM loaded from "
                      "student.path, e.g. a smaller model of the teacher's family)", "seq2seq")
    path: str = _help("local directory of a causal-LM student (student.kind=causal)", "")

    def __post_init__(self):
        _check(self.kind in MODEL_KINDS, "student.kind", f"'{self.kind}' is not seq2seq or causal")
        _check(self.kind != "causal" or bool(self.path), "student.path",
               "a causal-LM student is loaded: set student.path to its local directory")
        for name in ("depth_ratio", "width_ratio", "heads_ratio"):
            _check(0 < getattr(self, name) <= 1, f"student.{name}", f"{getattr(self, name)} must be in (0, 1]")
        _check(0 <= self.decoder_depth_ratio <= 1, "student.decoder_depth_ratio", "must be in [0, 1] (0 = same as depth_ratio)")


LR_SCHEDULES = ("cosine", "wsd", "linear", "constant")


@dataclass
class TrainConfig:
    learning_rate: float = _help("peak AdamW learning rate", 1e-3)
    warmup_steps: int = _help("linear warm-up steps before the schedule's decay", 300)
    lr_schedule: str = _help("learning rate after warm-up: cosine (decays to 0 over all updates), wsd (warm-up, "
                             "stable at the peak, then linear decay to 0 over the last decay_fraction of the updates), "
                             "linear or constant", "cosine")
    decay_fraction: float = _help("wsd only: the share of the updates spent decaying to 0", 0.2)
    epochs: float = _help("training epochs (ignored when max_steps > 0)", 5.0)
    max_steps: int = _help("total optimizer updates (0 = use epochs)", 0)
    batch_tokens: int = _help("tokens per batch per device (padded source+target lengths x rows)", 3000)
    grad_accum: int = _help("gradient accumulation steps", 1)
    weight_decay: float = _help("AdamW weight decay", 0.01)
    max_grad_norm: float = _help("gradient clipping norm", 1.0)
    label_smoothing: float = _help("label smoothing of the reference cross-entropy", 0.1)
    bf16: bool = _help("bf16 autocast (CPU with AMX or a recent GPU); losses stay fp32", True)
    eval_every_epoch: bool = _help("generate on dev and compute BLEU at each epoch end", True)
    early_stopping_patience: int = _help("stop after this many evaluations without dev-BLEU gain (0 = off)", 0)
    seed: int = _help("random seed", 1)
    eval_beams: int = _help("beam size for dev BLEU during training", 1)

    def __post_init__(self):
        _check(self.learning_rate > 0, "train.learning_rate", "must be positive")
        _check(self.epochs > 0 or self.max_steps > 0, "train.epochs", "set epochs > 0 or max_steps > 0")
        _check(self.max_steps >= 0 and self.warmup_steps >= 0, "train.max_steps", "steps must not be negative")
        _check(self.lr_schedule in LR_SCHEDULES, "train.lr_schedule",
               f"'{self.lr_schedule}' is not one of {', '.join(LR_SCHEDULES)}")
        _check(0 < self.decay_fraction <= 1, "train.decay_fraction", f"{self.decay_fraction} must be in (0, 1]")
        _check(self.batch_tokens >= 64, "train.batch_tokens", f"{self.batch_tokens} is too small; use at least 64")
        _check(self.grad_accum >= 1, "train.grad_accum", "must be at least 1")
        _check(0 <= self.label_smoothing < 1, "train.label_smoothing", "must be in [0, 1)")
        _check(self.eval_beams >= 1, "train.eval_beams", "must be at least 1")


@dataclass
class DistillConfig:
    alpha: float = _help("weight of the KD term  alpha * T^2 * KL(p_teacher^T || p_student^T)", 0.5)
    beta: float = _help("weight of the label-smoothed cross-entropy on the reference", 0.5)
    temperature: float = _help("softmax temperature T applied to teacher and student logits", 2.0)
    divergence: str = _help("divergence of the token-level KD term on the references: forward_kl (default), "
                            "reverse_kl, jsd, skew_kl or tvd (the on-policy term has its own "
                            "on_policy_divergence)", "forward_kl")
    divergence_beta: float = _help("beta of distill.divergence=jsd (alpha of skew_kl), in [0, 1]; ignored by the "
                                   "others", 0.5)
    teacher_cache: bool = _help("read the teacher's top-k probabilities from RUN_DIR/teacher-cache (built once by "
                                "`distilmt cache-teacher`) instead of running the teacher in every step", False)
    cache_top_k: int = _help("token ids (and probabilities) kept per target token in the teacher cache", 16)
    cache_dtype: str = _help("storage of the cached log-probabilities: float16 (compact) or float32 (exact)",
                             "float16")
    # -- schedules (method 2): progress = optimizer step / max_steps ---------------------------------------------
    temperature_schedule: str = _help("how T moves from distill.temperature to distill.temperature_final over "
                                      "training: constant, linear, exponential or cosine", "constant")
    temperature_final: float | None = _help("T at the end of training (needs a temperature_schedule other than "
                                            "constant)", None)
    weight_schedule: str = _help("how alpha and beta move to alpha_final and beta_final: constant, linear or cosine",
                                 "constant")
    alpha_final: float | None = _help("KD weight at the end of training (default: alpha)", None)
    beta_final: float | None = _help("cross-entropy weight at the end of training (default: beta)", None)
    # -- hidden-state distillation (method 3) --------------------------------------------------------------------
    hidden_weight: float = _help("weight of the hidden-state term (0 = off): distance between mapped student and "
                                 "teacher layer outputs, through learned linear adapters when widths differ", 0.0)
    hidden_loss: str = _help("hidden-state distance per position: mse (mean over the width) or cosine (1 - cos)",
                             "mse")
    hidden_layer_map: str | list | dict = _help(
        "which student layer learns from which teacher layer: uniform, last (= last:1), last:K, an explicit list "
        "of [student_layer, teacher_layer] pairs (0-based), or {encoder: ..., decoder: ...}", "uniform")
    hidden_sides: str = _help("where hidden states are matched: encoder, decoder or encoder,decoder",
                              "encoder,decoder")
    # -- attention distillation (method 4) -----------------------------------------------------------------------
    attention_weight: float = _help("weight of the attention term (0 = off): divergence between mapped layers' "
                                    "attention distributions (needs eager attention; set automatically)", 0.0)
    attention_loss: str = _help("attention divergence per query: kl (KL(teacher || student)) or mse", "kl")
    attention_layer_map: str | list | dict = _help("layer map of the attention term (same forms as "
                                                   "hidden_layer_map)", "uniform")
    attention_kinds: str = _help("attentions matched: any of encoder (self), decoder (self), cross, comma-separated",
                                 "encoder,decoder,cross")
    attention_heads: str = _help("when head counts differ: average (teacher heads averaged in groups) or repeat "
                                 "(each student head repeated to face every teacher head of its group)", "average")
    # -- on-policy distillation (method 5) -----------------------------------------------------------------------
    on_policy_ratio: float = _help("probability lambda that a training batch's KD term is computed on the student's "
                                   "own translations of its sources instead of the references (GKD; 0 = off)", 0.0)
    on_policy_decoding: str = _help("how the student generates them: sample or greedy", "sample")
    on_policy_temperature: float = _help("sampling temperature of that generation (sample only)", 1.0)
    on_policy_max_new_tokens: int = _help("longest student translation generated for the on-policy term", 64)
    on_policy_divergence: str = _help("divergence on the student's translations: forward_kl, reverse_kl, jsd, "
                                      "skew_kl or tvd", "jsd")
    on_policy_beta: float = _help("beta of the on-policy jsd (alpha of skew_kl), in [0, 1]", 0.5)
    # -- multi-teacher (method 6) --------------------------------------------------------------------------------
    teachers: list = _help("an ensemble: Hugging Face teacher directories sharing the student's vocabulary, mixed "
                           "in probability space (empty = the single run teacher)", factory=list)
    teacher_weights: list | str | None = _help("mixture weights of distill.teachers: a list of numbers (normalised), "
                                               "'learned' (softmax weights trained with the student on the "
                                               "references), or empty for uniform", None)
    # -- mutual learning (method 7) ------------------------------------------------------------------------------
    mutual: bool = _help("deep mutual learning: train two students together, each also learning KL to the other's "
                         "distribution (plus the teacher's when alpha > 0)", False)
    mutual_weight: float = _help("weight of each student's KL to its peer, times T^2 like the KD term", 1.0)
    mutual_peer: str = _help("how the peer starts: copy (the first student's initial weights, e.g. teacher-derived) "
                             "or fresh (independent random initialisation, as in the DML paper)", "copy")
    # -- progressive distillation (method 8) ----------------------------------------------------------------------
    progressive_factor: float = _help("progressive distillation (0 = off): a chain teacher -> intermediate -> ... -> "
                                      "student, stage k's student.* ratios being max(target ratio, factor^k), each "
                                      "stage taught by the previous one (stage student-progressive); e.g. 0.7", 0.0)

    def __post_init__(self):
        _check(self.alpha is not None and self.alpha >= 0, "distill.alpha", "must be a number >= 0")
        _check(self.beta is not None and self.beta >= 0, "distill.beta", "must be a number >= 0")
        _check(self.alpha + self.beta > 0, "distill.alpha", "alpha and beta are both 0: nothing to learn from")
        _check(self.temperature is not None and self.temperature > 0, "distill.temperature", "must be > 0")
        _check(isinstance(self.cache_top_k, int) and self.cache_top_k >= 1, "distill.cache_top_k",
               f"{self.cache_top_k!r} must be a whole number >= 1 (16 is a good start)")
        _check(self.cache_dtype in ("float16", "float32"), "distill.cache_dtype",
               f"'{self.cache_dtype}' is not float16 or float32")
        self._check_divergence()
        self._check_schedules()
        self._check_intermediate()
        self._check_online()
        self._check_progressive()

    def _check_progressive(self) -> None:
        f = self.progressive_factor
        _check(isinstance(f, (int, float)) and not isinstance(f, bool) and (f == 0 or 0 < f < 1),
               "distill.progressive_factor", f"{f!r} must be in (0, 1) (each stage shrinks by it, e.g. 0.7), or 0 "
               "for off")
        if f:
            _check(not self.teacher_cache, "distill.progressive_factor", "each stage learns from the previous "
                   "stage's live model, which the teacher cache does not hold: set distill.teacher_cache to false")
            _check(not self.teachers, "distill.progressive_factor", "the chain starts from the run's one teacher: "
                   "set distill.teachers to [] or progressive_factor to 0")

    def _check_divergence(self) -> None:
        from .losses import DIVERGENCES

        _check(self.divergence in DIVERGENCES, "distill.divergence",
               f"'{self.divergence}' is not one of {', '.join(DIVERGENCES)}")
        _check(isinstance(self.divergence_beta, (int, float)) and not isinstance(self.divergence_beta, bool)
               and 0 <= self.divergence_beta <= 1, "distill.divergence_beta",
               f"{self.divergence_beta!r} must be a number in [0, 1] (0.5 is a good start)")
        if self.teacher_cache:  # the cache is the teacher's top k, 0 elsewhere: KL(student || teacher) is infinite
            reverse = self.divergence == "reverse_kl" or (self.divergence == "jsd" and self.divergence_beta == 1)
            what = "jsd with divergence_beta 1 (the reverse KL)" if self.divergence == "jsd" else "reverse_kl"
            _check(not reverse, "distill.divergence",
                   f"{what} is infinite on the teacher cache's truncated top-k distribution: choose forward_kl, jsd "
                   "(divergence_beta < 1), skew_kl or tvd, or set distill.teacher_cache to false")

    def _check_schedules(self) -> None:
        from .schedules import SCHEDULES

        _check(self.temperature_schedule in SCHEDULES, "distill.temperature_schedule",
               f"'{self.temperature_schedule}' is not one of {', '.join(SCHEDULES)}")
        if self.temperature_schedule == "constant":
            _check(self.temperature_final is None, "distill.temperature_final",
                   "is set but distill.temperature_schedule is constant: choose linear, exponential or cosine")
        else:
            _check(self.temperature_final is not None, "distill.temperature_final",
                   f"a {self.temperature_schedule} temperature schedule needs the final T: set temperature_final")
            _check(self.temperature_final > 0, "distill.temperature_final", "must be > 0")
        _check(self.weight_schedule in ("constant", "linear", "cosine"), "distill.weight_schedule",
               f"'{self.weight_schedule}' is not one of constant, linear, cosine")
        for name in ("alpha_final", "beta_final"):
            value = getattr(self, name)
            if self.weight_schedule == "constant":
                _check(value is None, f"distill.{name}",
                       "is set but distill.weight_schedule is constant: choose linear or cosine")
            else:
                _check(value is None or value >= 0, f"distill.{name}", "must be a number >= 0")
        if self.weight_schedule != "constant":
            _check(self.alpha_final is not None or self.beta_final is not None, "distill.weight_schedule",
                   f"a {self.weight_schedule} weight schedule needs alpha_final and/or beta_final")
            _check(self.final_alpha + self.final_beta > 0, "distill.alpha_final",
                   "alpha and beta both end at 0: nothing to learn from at the end of training")

    def _check_intermediate(self) -> None:
        for name in ("hidden_weight", "attention_weight"):
            value = getattr(self, name)
            _check(isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0,
                   f"distill.{name}", f"{value!r} must be a number >= 0 (0 = off)")
        _check(self.hidden_loss in ("mse", "cosine"), "distill.hidden_loss",
               f"'{self.hidden_loss}' is not mse or cosine")
        _check(self.attention_loss in ("kl", "mse"), "distill.attention_loss",
               f"'{self.attention_loss}' is not kl or mse")
        _check(self.attention_heads in ("average", "repeat"), "distill.attention_heads",
               f"'{self.attention_heads}' is not average or repeat")
        for name, allowed in (("hidden_sides", ("encoder", "decoder")),
                              ("attention_kinds", ("encoder", "decoder", "cross"))):
            parts = [p.strip() for p in str(getattr(self, name)).split(",") if p.strip()]
            _check(bool(parts) and all(p in allowed for p in parts), f"distill.{name}",
                   f"'{getattr(self, name)}' must be a comma-separated list of {', '.join(allowed)}")
        for name in ("hidden_layer_map", "attention_layer_map"):
            problem = _layer_map_problem(getattr(self, name))
            _check(problem is None, f"distill.{name}", str(problem))
        if self.teacher_cache:
            for name in ("hidden_weight", "attention_weight"):
                _check(getattr(self, name) == 0, f"distill.{name}",
                       "the teacher cache holds only output probabilities, not hidden states or attentions: "
                       "set distill.teacher_cache to false (live teacher) or this weight to 0")

    def _check_online(self) -> None:
        from .losses import DIVERGENCES

        _check(isinstance(self.on_policy_ratio, (int, float)) and 0 <= self.on_policy_ratio <= 1,
               "distill.on_policy_ratio", f"{self.on_policy_ratio!r} must be a probability in [0, 1] (0 = off)")
        _check(self.on_policy_decoding in ("sample", "greedy"), "distill.on_policy_decoding",
               f"'{self.on_policy_decoding}' is not sample or greedy")
        _check(self.on_policy_temperature > 0, "distill.on_policy_temperature", "must be > 0")
        _check(self.on_policy_max_new_tokens >= 1, "distill.on_policy_max_new_tokens", "must be at least 1")
        _check(self.on_policy_divergence in DIVERGENCES, "distill.on_policy_divergence",
               f"'{self.on_policy_divergence}' is not one of {', '.join(DIVERGENCES)}")
        _check(0 <= self.on_policy_beta <= 1, "distill.on_policy_beta", "must be in [0, 1]")
        if self.on_policy_ratio > 0:
            _check(not self.teacher_cache, "distill.on_policy_ratio", "the teacher cache only scores the references, "
                   "not the student's own translations: set distill.teacher_cache to false or on_policy_ratio to 0")
        _check(isinstance(self.teachers, (list, tuple)) and all(isinstance(t, str) and t for t in self.teachers),
               "distill.teachers", f"{self.teachers!r} must be a list of teacher directories, e.g. [dir1, dir2]")
        w = self.teacher_weights
        if w not in (None, "", []):
            _check(bool(self.teachers), "distill.teacher_weights", "is set but distill.teachers is empty: list the "
                   "ensemble's teacher directories in distill.teachers")
            if isinstance(w, str):
                _check(w == "learned", "distill.teacher_weights", f"'{w}' is not 'learned' nor a list of numbers")
            else:
                _check(isinstance(w, (list, tuple)) and len(w) == len(self.teachers)
                       and all(isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 for x in w)
                       and sum(w) > 0, "distill.teacher_weights",
                       f"{w!r} must be {len(self.teachers)} numbers >= 0 (one per teacher, not all 0) or 'learned'")
        if self.teachers:
            _check(not self.teacher_cache, "distill.teachers", "the teacher cache holds one teacher's probabilities: "
                   "set distill.teacher_cache to false to run the ensemble")
        _check(isinstance(self.mutual_weight, (int, float)) and self.mutual_weight >= 0, "distill.mutual_weight",
               "must be a number >= 0")
        _check(self.mutual_peer in ("copy", "fresh"), "distill.mutual_peer",
               f"'{self.mutual_peer}' must be copy or fresh")
        if self.mutual:
            for name in ("hidden_weight", "attention_weight", "on_policy_ratio"):
                _check(getattr(self, name) == 0, f"distill.{name}",
                       "is not supported together with distill.mutual yet: set it to 0 or mutual to false")

    @property
    def ensemble_weights(self) -> list[float] | str | None:
        """distill.teacher_weights as EnsembleTeacher.load takes it: None (uniform), a list, or 'learned'."""
        return None if self.teacher_weights in (None, "", []) else self.teacher_weights

    @property
    def final_alpha(self) -> float:
        return self.alpha if self.alpha_final is None else self.alpha_final

    @property
    def final_beta(self) -> float:
        return self.beta if self.beta_final is None else self.beta_final

    @property
    def uses_kd(self) -> bool:
        """Whether the token-level KD term is ever on (alpha > 0 at the start or the end of training)."""
        return self.alpha > 0 or self.final_alpha > 0

    def split(self, name: str) -> tuple[str, ...]:
        """A comma-separated field (hidden_sides, attention_kinds) as a tuple of names."""
        return tuple(p.strip() for p in str(getattr(self, name)).split(",") if p.strip())


def _layer_map_problem(spec) -> str | None:
    """Why ``spec`` is not a layer map (uniform, last, last:K, [[s, t], ...], {encoder: .., decoder: ..}); None if it is."""
    if isinstance(spec, dict):
        extra = sorted(set(spec) - {"encoder", "decoder"})
        if extra or not spec:
            return "a per-side map has the keys encoder and/or decoder, e.g. {encoder: uniform, decoder: last:2}"
        for side in spec.values():
            if isinstance(side, dict) or _layer_map_problem(side):
                return _layer_map_problem(side) or "a per-side map's values are maps, not mappings"
        return None
    if isinstance(spec, str):
        if spec in ("uniform", "last"):
            return None
        if spec.startswith("last:") and spec[5:].isdigit() and int(spec[5:]) >= 1:
            return None
        return f"'{spec}' is not uniform, last or last:K (K >= 1), nor a list of [student_layer, teacher_layer] pairs"
    if isinstance(spec, (list, tuple)) and spec and all(
            isinstance(pair, (list, tuple)) and len(pair) == 2
            and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in pair) for pair in spec):
        return None
    return (f"{spec!r} is not a layer map: use uniform, last:K or pairs of 0-based layer indices such as "
            "[[0, 1], [1, 3]]")


SEQKD_TRAIN_ON = ("original", "distilled", "mix")


@dataclass
class SeqKDConfig:
    """Sequence-level KD: the teacher's own translations of the training sources become the student's labels."""

    enabled: bool = _help("generate the distilled corpus (RUN_DIR/distilled/) and train a third student, "
                          "student-seqkd, on it; off keeps a run's students and metrics rows as they are", False)
    num_beams: int = _help("beam size of the teacher's translations", 4)
    length_penalty: float = _help("beam-search length penalty (> 1 favours longer, < 1 shorter translations)", 1.0)
    max_new_tokens: int = _help("longest translation generated, in tokens (also capped by the model's positions)",
                                128)
    do_sample: bool = _help("sample translations instead of searching for the best one", False)
    top_p: float = _help("nucleus sampling: keep the most probable tokens holding this mass (needs do_sample)", 1.0)
    temperature: float = _help("sampling temperature (needs do_sample)", 1.0)
    seed: int = _help("seed of sampled translations (each shard is seeded from it, so a resumed run is identical)", 0)
    num_return_sequences: int = _help("hypotheses kept per source in distilled/nbest.jsonl (the best one is the "
                                      "label); at most num_beams unless sampling", 1)
    batch_tokens: int = _help("source tokens per generation batch (rows x longest source; beams multiply memory)",
                              2000)
    shard_size: int = _help("sentences per shard file; each finished shard survives an interruption", 1000)
    min_length_ratio: float = _help("drop pairs whose target/source word ratio is below this (0 = off)", 0.0)
    max_length_ratio: float = _help("drop pairs whose target/source word ratio is above this (0 = off)", 0.0)
    min_score: float | None = _help("drop pairs whose teacher log-probability per target token is below this "
                                    "(e.g. -1.5; None = off)", None)
    train_on: str = _help("what student-seqkd learns from: distilled (the teacher's translations), original "
                          "(the references) or mix (all references plus mix_ratio of the distilled pairs)",
                          "distilled")
    mix_ratio: float = _help("for train_on=mix: share of the sources whose distilled pair is added to the original "
                             "pairs (a seeded random sample; 1 = both full sets)", 1.0)
    with_token_kd: bool = _help("also apply token-level KD (the distill section, live teacher) on the distilled "
                                "targets; off = no teacher in memory while student-seqkd trains", False)

    def __post_init__(self):
        for name in ("num_beams", "max_new_tokens", "num_return_sequences", "shard_size"):
            value = getattr(self, name)
            _check(isinstance(value, int) and not isinstance(value, bool) and value >= 1, f"seqkd.{name}",
                   f"{value!r} must be a whole number >= 1")
        _check(self.batch_tokens >= 16, "seqkd.batch_tokens", f"{self.batch_tokens} is too small; use at least 16")
        _check(0 < self.top_p <= 1, "seqkd.top_p", f"{self.top_p} must be in (0, 1]")
        _check(self.temperature > 0, "seqkd.temperature", f"{self.temperature} must be > 0")
        if not self.do_sample:
            _check(self.top_p == 1 and self.temperature == 1, "seqkd.do_sample",
                   "top_p/temperature only act when sampling: set seqkd.do_sample=true or leave them at 1")
            _check(self.num_return_sequences <= self.num_beams, "seqkd.num_return_sequences",
                   f"{self.num_return_sequences} hypotheses need at least as many beams: raise seqkd.num_beams to "
                   f"{self.num_return_sequences} or lower num_return_sequences")
        for name in ("min_length_ratio", "max_length_ratio"):
            _check(getattr(self, name) >= 0, f"seqkd.{name}", "must be >= 0 (0 = off)")
        if self.min_length_ratio and self.max_length_ratio:
            _check(self.min_length_ratio <= self.max_length_ratio, "seqkd.min_length_ratio",
                   f"{self.min_length_ratio} is above max_length_ratio {self.max_length_ratio}: nothing would be kept")
        _check(self.min_score is None or self.min_score <= 0, "seqkd.min_score",
               f"{self.min_score} is a log-probability per token, which is <= 0: use e.g. -1.5, or leave it unset")
        _check(self.train_on in SEQKD_TRAIN_ON, "seqkd.train_on",
               f"'{self.train_on}' is not one of {', '.join(SEQKD_TRAIN_ON)}")
        _check(0 < self.mix_ratio <= 1, "seqkd.mix_ratio", f"{self.mix_ratio} must be in (0, 1]")


LORA_TARGETS = ("auto", "all-linear")
_MODULE_NAME = r"[A-Za-z_][A-Za-z0-9_.]*"


@dataclass
class LoRAConfig:
    """LoRA (peft): low-rank adapters on the attention and feed-forward projections, the base weights frozen."""

    rank: int = _help("rank r of each adapter (A: r x in, B: out x r)", 8)
    alpha: float = _help("scaling numerator: the adapter's update is (alpha / rank) * B A", 16.0)
    dropout: float = _help("dropout on the adapter's input, in [0, 1)", 0.05)
    target_modules: str | list = _help(
        "which linear layers get adapters: auto (attention q/k/v/output and feed-forward projections: q_proj, "
        "k_proj, v_proj, out_proj, fc1, fc2 in Marian/M2M100/BART; q, k, v, o, wi, wo in T5; o_proj, gate_proj, "
        "up_proj, down_proj in Qwen2-style models), all-linear, or a list of module names", "auto")
    learning_rate: float = _help("peak learning rate of LoRA training (teacher-lora, and students trained with "
                                 "LoRA); adapters usually want a higher rate than full fine-tuning", 2e-3)
    teacher_steps: int = _help("optimizer updates of the teacher's LoRA fine-tune on the parallel data "
                               "(stage teacher-lora); batches as teacher_train", 500)
    warmup_steps: int = _help("linear warm-up steps of the teacher's LoRA fine-tune", 50)
    students: bool = _help("train the run's students (distilmt distill) with LoRA adapters on the derived student "
                           "instead of fully; each student directory then holds the merged model and adapter/",
                           False)

    def __post_init__(self):
        import re

        _check(isinstance(self.rank, int) and not isinstance(self.rank, bool) and self.rank >= 1, "lora.rank",
               f"{self.rank!r} must be a whole number >= 1 (8 is a good start)")
        _check(isinstance(self.alpha, (int, float)) and not isinstance(self.alpha, bool) and self.alpha > 0,
               "lora.alpha", f"{self.alpha!r} must be a number > 0 (often 2 x rank)")
        _check(isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1, "lora.dropout",
               f"{self.dropout!r} must be in [0, 1)")
        names = self.module_names
        _check(bool(names) and all(isinstance(n, str) and re.fullmatch(_MODULE_NAME, n) for n in names),
               "lora.target_modules", f"{self.target_modules!r} must be auto, all-linear or module names such as "
               "[q_proj, v_proj] (comma-separated or a list)")
        _check(not (len(names) > 1 and set(names) & set(LORA_TARGETS)), "lora.target_modules",
               f"{self.target_modules!r}: auto and all-linear stand alone, not inside a list of module names")
        _check(self.learning_rate > 0, "lora.learning_rate", "must be positive")
        _check(isinstance(self.teacher_steps, int) and self.teacher_steps >= 1, "lora.teacher_steps",
               f"{self.teacher_steps!r} must be a whole number >= 1")
        _check(isinstance(self.warmup_steps, int) and self.warmup_steps >= 0, "lora.warmup_steps",
               "must be a whole number >= 0")

    @property
    def module_names(self) -> list:
        """target_modules as a list (a comma-separated string split; auto / all-linear as one entry)."""
        if isinstance(self.target_modules, str):
            return [p.strip() for p in self.target_modules.split(",") if p.strip()]
        return list(self.target_modules) if isinstance(self.target_modules, (list, tuple)) else []


STUDY_TEACHERS = ("lora", "base")


@dataclass
class StudyConfig:
    """`distilmt study`: the base / LoRA / hard-label / soft-label comparison with one budget for every student."""

    kd_teacher: str = _help("teacher of the KD rows (hard-label-kd, soft-label-kd, hard+soft-kd): lora (the "
                            "LoRA fine-tuned teacher) or base", "lora")
    label_sources: int = _help("training sources the teacher translates for the hard-label rows (a seeded random "
                               "sample; 0 = all); generation settings under seqkd", 2000)
    student_pairs: int = _help("training pairs every student learns from (a seeded random sample; 0 = all): the "
                               "training-data size of the study's students", 0)
    seed: int = _help("seed of those samples", 0)

    def __post_init__(self):
        _check(self.kd_teacher in STUDY_TEACHERS, "study.kd_teacher",
               f"'{self.kd_teacher}' is not one of {', '.join(STUDY_TEACHERS)}")
        for name in ("label_sources", "student_pairs"):
            value = getattr(self, name)
            _check(isinstance(value, int) and not isinstance(value, bool) and value >= 0, f"study.{name}",
                   f"{value!r} must be a whole number >= 0 (0 = all)")


@dataclass
class EvalConfig:
    num_beams: int = _help("beam size for test translations", 4)
    batch_size: int = _help("sentences per generation batch", 64)
    max_new_tokens: int = _help("longest translation generated, in tokens", 128)
    samples_in_report: int = _help("sample translations shown in report.md", 8)
    speed_sentences: int = _help("test sentences timed for speed and memory, each model in its own process "
                                 "(0 = skip speed)", 64)
    export_ct2: bool = _help("export the KD student to CTranslate2 int8 and evaluate it too", True)
    semantic: bool = _help("semantic similarity to the references (BERTScore F1 for English, e5 cosine otherwise) "
                           "when pip install 'distilmt[semantic]' is installed", True)

    def __post_init__(self):
        _check(self.num_beams >= 1, "eval.num_beams", "must be at least 1")
        _check(self.batch_size >= 1, "eval.batch_size", "must be at least 1")
        _check(self.speed_sentences >= 0, "eval.speed_sentences", "must not be negative")


@dataclass
class MonitorConfig:
    enabled: bool = _help("show what teacher and student translate while the student learns", True)
    sample_frequency: int = _help("show the panel every this many optimizer steps", 50)
    num_samples: int = _help("fixed dev samples shown in each panel", 2)
    language: str = _help("language of the monitor's comments: en or zh", "en")
    show_diff: bool = _help("show a word-level diff between student and teacher output", False)
    max_text_length: int = _help("truncate shown texts to this many characters", 160)
    topics: dict = _help("extra topics: {topic: [keyword, ...]} added to the built-in lists", factory=dict)
    quiet: bool = _help("plain log lines only, even on a terminal", False)

    def __post_init__(self):
        _check(self.sample_frequency >= 1, "monitor.sample_frequency", "must be at least 1")
        _check(self.num_samples >= 1, "monitor.num_samples", "must be at least 1")
        _check(self.language in ("en", "zh"), "monitor.language", f"'{self.language}' is not en or zh")
        _check(self.max_text_length >= 10, "monitor.max_text_length", "must be at least 10")
        _check(isinstance(self.topics, dict) and all(isinstance(v, list) for v in self.topics.values()),
               "monitor.topics", "must map each topic name to a list of keywords")


@dataclass
class PromptConfig:
    """How a causal-LM teacher or student is asked to translate (distilmt.causal)."""

    template: str = _help("the prompt before the target: a string with {src_lang}, {tgt_lang} (language names) and "
                          "{source}, or auto = the tokenizer's chat template when it has one, else 'Translate this "
                          "{src_lang} text into {tgt_lang}.\\n{src_lang}: {source}\\n{tgt_lang}:'", "auto")

    def __post_init__(self):
        from .causal import template_problem

        problem = template_problem(self.template)
        _check(problem is None, "prompt.template", str(problem))


@dataclass
class RunConfig:
    name: str = _help("preset or run name", "custom")
    description: str = _help("one line on what this configuration is for", "")
    data: DataConfig = _help("corpus and tokenizer", factory=DataConfig)
    teacher: TeacherConfig = _help("the teacher: a directory to load, or an architecture to train", factory=TeacherConfig)
    student: StudentConfig = _help("how the student is derived from the teacher", factory=StudentConfig)
    teacher_train: TrainConfig = _help("training recipe of a teacher trained here", factory=TrainConfig)
    student_train: TrainConfig = _help("training recipe of both students (baseline and KD)", factory=TrainConfig)
    distill: DistillConfig = _help("token-level KD", factory=DistillConfig)
    seqkd: SeqKDConfig = _help("sequence-level KD: the teacher's translations as labels", factory=SeqKDConfig)
    eval: EvalConfig = _help("final evaluation", factory=EvalConfig)
    monitor: MonitorConfig = _help("the visual distillation monitor", factory=MonitorConfig)
    lora: LoRAConfig = _help("LoRA adapters (peft): teacher-lora, LoRA students", factory=LoRAConfig)
    study: StudyConfig = _help("`distilmt study`: what the comparison rows learn from", factory=StudyConfig)
    prompt: PromptConfig = _help("translation prompt of causal-LM teachers and students", factory=PromptConfig)

    def to_dict(self) -> dict:
        return asdict(self)


def from_dict(cls, values: dict | None, where: str = ""):
    """Build a (nested) config dataclass from a dict, rejecting unknown keys with a clear message."""
    values = dict(values or {})
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"{prefix}{unknown[0]}: unknown setting; known ones are {', '.join(sorted(known))}")
    kwargs = {}
    for name, value in values.items():
        kind = hints[name]
        key = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(kind):
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a mapping of settings, got {value!r}")
            kwargs[name] = from_dict(kind, value, key)
        else:
            kwargs[name] = _coerce(kind, value, key)
    return cls(**kwargs)


def _coerce(kind, value, key):
    if typing.get_origin(kind) in (typing.Union, types.UnionType):  # X | None: None stays None, else an X
        inner = [a for a in typing.get_args(kind) if a is not type(None)]
        if value is None and len(inner) < len(typing.get_args(kind)):
            return None
        return _coerce(inner[0], value, key) if len(inner) == 1 else value
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if kind in (int, float):
        if isinstance(value, bool) or value is None:
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if kind is int:
            if number != int(number):
                raise ConfigError(f"{key}: expected a whole number, got {value!r}")
            return int(number)
        return number
    if kind is str:
        return str(value)
    return value


def set_override(values: dict, dotted: str, raw: str) -> None:
    """Apply one ``section.field=value`` command-line override to a config dict (YAML-typed value)."""
    import yaml

    path = dotted.split(".")
    node = values
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: '{part}' is not a section")
    node[path[-1]] = yaml.safe_load(raw) if raw != "" else ""


def load_config(preset: str | None = None, file: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Resolve a configuration: a preset or a YAML file, then ``key=value`` overrides, then validation."""
    import yaml

    if preset and file:
        raise ConfigError("give either --preset or --config, not both")
    if file:
        path = Path(file)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
    else:
        name = preset or "quick"
        path = PRESET_DIR / f"{name}.yaml"
        if not path.is_file():
            raise ConfigError(f"preset '{name}' does not exist; choose one of {', '.join(PRESETS)}")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}': write it as section.field=value, e.g. distill.temperature=2")
        key, raw = item.split("=", 1)
        set_override(values, key.strip(), raw.strip())
    return from_dict(RunConfig, values)


def save_config(config: RunConfig, path: str | Path) -> None:
    import yaml

    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8")
