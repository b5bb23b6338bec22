"""``distill``: what the student learns from its teacher (token-level KD, schedules, intermediate terms,
on-policy, ensembles, mutual learning, progressive chains, the teacher cache)."""

from __future__ import annotations

from dataclasses import dataclass

from .fields import check as _check, help_field as _help

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd", "skew_kl", "tvd")
"""The divergences :mod:`distilmt.losses` implements (its ``DIVERGENCES`` table has exactly these keys)."""
MIN_TEMPERATURE = 0.1
"""Below this the tempered teacher distribution is one-hot in float32 and token KD carries no signal."""
SCHEDULES = ("constant", "linear", "exponential", "cosine")
"""How a temperature or loss weight moves over training (:func:`distilmt.training.schedules.schedule_value`)."""

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
    cache_shard_size: int = _help("training examples per teacher-cache shard: the unit a build resumes from and that "
                                  "torchrun's processes share out (rank r builds shards r, r + N, ...)", 1024)
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
        _check(self.alpha is not None and 0 <= self.alpha <= 1, "distill.alpha",
               f"{self.alpha!r} must be a weight in [0, 1] (the KD term's share; 0.5 is the textbook mix)")
        _check(self.beta is not None and self.beta >= 0, "distill.beta", "must be a number >= 0")
        _check(self.alpha + self.beta > 0, "distill.alpha", "alpha and beta are both 0: nothing to learn from")
        _check(self.temperature is not None and self.temperature >= MIN_TEMPERATURE, "distill.temperature",
               f"{self.temperature!r} must be at least {MIN_TEMPERATURE}: below it softmax(z / T) is one-hot and the "
               "T^2-scaled KD term vanishes (1 to 4 are usual)")
        _check(isinstance(self.cache_top_k, int) and self.cache_top_k >= 1, "distill.cache_top_k",
               f"{self.cache_top_k!r} must be a whole number >= 1 (16 is a good start)")
        _check(self.cache_dtype in ("float16", "float32"), "distill.cache_dtype",
               f"'{self.cache_dtype}' is not float16 or float32")
        _check(isinstance(self.cache_shard_size, int) and self.cache_shard_size >= 1, "distill.cache_shard_size",
               f"{self.cache_shard_size!r} must be a whole number >= 1 (1024 is the default)")
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
        _check(self.temperature_schedule in SCHEDULES, "distill.temperature_schedule",
               f"'{self.temperature_schedule}' is not one of {', '.join(SCHEDULES)}")
        if self.temperature_schedule == "constant":
            _check(self.temperature_final is None, "distill.temperature_final",
                   "is set but distill.temperature_schedule is constant: choose linear, exponential or cosine")
        else:
            _check(self.temperature_final is not None, "distill.temperature_final",
                   f"a {self.temperature_schedule} temperature schedule needs the final T: set temperature_final")
            _check(self.temperature_final >= MIN_TEMPERATURE, "distill.temperature_final",
                   f"{self.temperature_final!r} must be at least {MIN_TEMPERATURE} (see distill.temperature)")
        _check(self.weight_schedule in ("constant", "linear", "cosine"), "distill.weight_schedule",
               f"'{self.weight_schedule}' is not one of constant, linear, cosine")
        for name in ("alpha_final", "beta_final"):
            value = getattr(self, name)
            if self.weight_schedule == "constant":
                _check(value is None, f"distill.{name}",
                       "is set but distill.weight_schedule is constant: choose linear or cosine")
            else:
                _check(value is None or value >= 0, f"distill.{name}", "must be a number >= 0")
                _check(value is None or name != "alpha_final" or value <= 1, f"distill.{name}",
                       f"{value!r} must be a weight in [0, 1]")
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




