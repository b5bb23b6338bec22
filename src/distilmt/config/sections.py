"""The config sections other than ``distill``: data, models, training, labels, LoRA, study, evaluation, monitor,
prompt. Each dataclass validates itself on construction and names the field in its one-sentence error."""

from __future__ import annotations

import re
import string
from dataclasses import InitVar, dataclass

from .fields import check as _check, help_field as _help


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
    tokenizer_pairs: int = _help("a tokenizer trained here learns from at most this many training pairs, spread "
                                 "evenly over the training split (0 = all of them)", 100_000)
    max_tokens: int = _help("drop training pairs longer than this many subword tokens on either side", 64)
    max_train_pairs: int = _help("use at most this many training pairs (0 = all)", 0)
    max_eval_sentences: int = _help("dev sentences used for BLEU during training (0 = all)", 300)
    max_test_sentences: int = _help("test sentences used in the final evaluation (0 = all)", 0)
    source_lang_code: str = _help("the tokenizer's code of the source language, for a teacher whose tokenizer has "
                                  "language codes (NLLB-200: eng_Latn; M2M100: en); default: derived from "
                                  "source_lang (NLLB from a table of common languages, M2M100 the language itself)",
                                  "")
    target_lang_code: str = _help("the tokenizer's code of the target language (NLLB-200: hun_Latn; M2M100: hu): "
                                  "labels start with it and every translation is forced to start with it; default: "
                                  "derived from target_lang", "")
    source_prefix: str = _help("text put before every source sentence, e.g. a T5/mT5 task prefix 'translate English "
                               "to Hungarian: ' (mind the trailing space); default: none", "")
    target_token: str = _help("target-language token put before every source sentence, for a multilingual opus-mt "
                              "teacher, e.g. '>>hun<<' (one token of the teacher's tokenizer); default: none", "")

    def __post_init__(self):
        _check(bool(self.corpus.strip()), "data.corpus", "is empty; set it to bible or to your corpus file")
        _check(self.format in ("auto", "tsv", "plain", "jsonl"), "data.format",
               f"'{self.format}' is not one of auto, tsv, plain, jsonl")
        _check(self.source_lang != self.target_lang, "data.source_lang",
               f"source and target are both '{self.source_lang}'; set data.target_lang to the other language")
        if self.corpus == "bible":
            _check({self.source_lang, self.target_lang} == {"en", "hu"}, "data.source_lang",
                   "the built-in corpus is English-Hungarian: use en/hu or hu/en, or point data.corpus at your files")
        _check(self.vocab_size >= 100, "data.vocab_size", f"{self.vocab_size} is too small; use at least 100")
        _check(self.max_tokens >= 4, "data.max_tokens", "must be at least 4")
        if self.corpus != "bible":  # a user corpus holds dev and test out of itself unless files are given
            for name, given in (("dev_size", self.dev_file), ("test_size", self.test_file)):
                _check(bool(given) or getattr(self, name) >= 1, f"data.{name}",
                       f"is {getattr(self, name)}: without data.{name.split('_')[0]}_file at least 1 sentence must be "
                       "held out (dev BLEU picks the best checkpoint; the test set is what the table scores)")
        for name in ("dev_size", "test_size", "max_train_pairs", "max_eval_sentences", "max_test_sentences",
                     "tokenizer_pairs"):
            _check(getattr(self, name) >= 0, f"data.{name}", "must not be negative")
        for name in ("source_lang_code", "target_lang_code", "target_token"):
            value = getattr(self, name)
            _check(isinstance(value, str) and value == value.strip() and " " not in value, f"data.{name}",
                   f"{value!r} must be one token without spaces (e.g. hun_Latn, >>hun<<), or empty")
        _check(isinstance(self.source_prefix, str), "data.source_prefix",
               f"{self.source_prefix!r} must be text, e.g. 'translate English to Hungarian: '")

    @property
    def direction(self) -> str:
        return f"{self.source_lang}-{self.target_lang}"


MODEL_KINDS = ("seq2seq", "causal")


@dataclass
class TeacherConfig:
    path: str = _help("a local Hugging Face seq2seq model directory to use as the teacher; empty = train one here", "")
    arch: str = _help("architecture of a teacher trained here: 'prenorm' (M2M100-style pre-LayerNorm) or "
                      "'marian' (MarianMT, post-LayerNorm)", "prenorm")
    d_model: int = _help("hidden width of a teacher trained here (a multiple of heads); a loaded teacher keeps its "
                         "own shape", 256)
    encoder_layers: int = _help("encoder depth of a teacher trained here", 3)
    decoder_layers: int = _help("decoder depth of a teacher trained here (students may cut it more than the "
                                "encoder: student.decoder_depth_ratio)", 3)
    ffn_dim: int = _help("feed-forward width of a teacher trained here", 1024)
    heads: int = _help("attention heads of a teacher trained here", 4)
    dropout: float = _help("dropout of a teacher trained here (residual and embeddings; attention and activation "
                           "dropout are 0)", 0.1)
    kind: str = _help("seq2seq (an encoder-decoder, loaded from path or trained here) or causal (a causal LM such "
                      "as Qwen2 loaded from path and prompted with prompt.template)", "seq2seq")
    device: str = _help("where the frozen teacher runs while students learn from it (live KD, the teacher cache, "
                        "HF labels): empty = with the student (the GPU when there is one); cuda:N = that GPU, "
                        "e.g. a second one when the teacher does not fit beside the student; cpu; auto = sharded "
                        "over the visible GPUs by accelerate (device_map=auto)", "")
    inference_dtype: str = _help("the frozen teacher's weights: auto = as saved, under the student's autocast; bf16 "
                                 "or fp16 = loaded in half precision (half the memory; a GPU's fast path); fp32",
                                 "auto")

    def __post_init__(self):
        _check(self.kind in MODEL_KINDS, "teacher.kind", f"'{self.kind}' is not seq2seq or causal")
        _check(self.device in ("", "cpu", "auto", "cuda") or re.fullmatch(r"cuda:\d+", self.device) is not None,
               "teacher.device", f"'{self.device}' is not empty, cpu, auto, cuda or cuda:N")
        _check(self.inference_dtype in INFERENCE_DTYPES, "teacher.inference_dtype",
               f"'{self.inference_dtype}' is not one of {', '.join(INFERENCE_DTYPES)}")
        _check(self.kind != "causal" or bool(self.path), "teacher.path",
               "a causal-LM teacher is loaded, not trained here: set teacher.path to its local directory")
        _check(self.arch in ("prenorm", "marian"), "teacher.arch", f"'{self.arch}' is not prenorm or marian")
        _check(self.d_model > 0 and self.d_model % max(self.heads, 1) == 0, "teacher.d_model",
               f"{self.d_model} must be a positive multiple of teacher.heads ({self.heads})")
        for name in ("encoder_layers", "decoder_layers", "ffn_dim", "heads"):
            _check(getattr(self, name) >= 1, f"teacher.{name}", "must be at least 1")
        _check(0 <= self.dropout < 1, "teacher.dropout", "must be in [0, 1)")


NARROW_INITS = ("random", "select")
"""student.narrow_init: how a student narrower than its teacher starts (:func:`distilmt.models.build.select_weights`)."""

INFERENCE_DTYPES = ("auto", "bf16", "fp16", "fp32")
"""teacher.inference_dtype: the frozen teacher's weight type (:func:`distilmt.models.loading.placement`)."""

STUDENT_SHAPES = ("", "tiny", "base-memory", "base")
"""Named student shapes (their dimensions: :mod:`distilmt.models.shapes`); "" derives the shape by the ratios."""


@dataclass
class StudentConfig:
    depth_ratio: float = _help("student layers = round(teacher layers x ratio), at least 1", 0.67)
    width_ratio: float = _help("student d_model and ffn = teacher's x ratio (rounded to a multiple of heads)", 1.0)
    heads_ratio: float = _help("student heads = teacher heads x ratio, at least 1", 1.0)
    decoder_depth_ratio: float = _help("decoder depth ratio (default: depth_ratio); a shallow decoder is fastest", 0.0)
    init_from_teacher: bool = _help("when widths match, copy embeddings and a spread-out subset of teacher "
                                    "layers into the student (shrink and fine-tune); a narrower student is "
                                    "initialised as student.narrow_init says", True)
    narrow_init: str = _help("a student narrower than its teacher (width_ratio < 1, or a named shape) with "
                             "init_from_teacher: select (weight selection: each student tensor takes evenly spaced "
                             "entries of the teacher's, the same indices in every layer, from the spread-out layers; "
                             "measured on the built-in corpus, two seeds: +0.77 and +1.08 test BLEU for a 4.5x smaller "
                             "student trained without KD, +0.41 and +0.46 with KD, over random) or random (fresh "
                             "weights)", "select")
    kind: str = _help("seq2seq (derived from the teacher by the ratios above) or causal (a causal LM loaded from "
                      "student.path, e.g. a smaller model of the teacher's family)", "seq2seq")
    path: str = _help("local directory of a causal-LM student (student.kind=causal)", "")
    shape: str = _help("a named student shape from production MT students (Firefox Translations): tiny (d_model 256, "
                       "FFN 1536, 6+2 layers, 8 heads), base-memory (384, 1536, 6+4, 8), base (512, 2048, 6+2, 8); it "
                       "replaces the ratios above; empty = derive the shape by the ratios", "")
    trim_vocab: bool = _help("keep only the teacher's tokens that the training corpus uses (both sides) plus the "
                             "special and added tokens: a smaller embedding and output layer, and a tokenizer of its "
                             "own saved with the student; KD then uses the teacher renormalised over the kept "
                             "vocabulary", False)

    def __post_init__(self):
        _check(self.kind in MODEL_KINDS, "student.kind", f"'{self.kind}' is not seq2seq or causal")
        _check(self.narrow_init in NARROW_INITS, "student.narrow_init",
               f"'{self.narrow_init}' is not one of {', '.join(NARROW_INITS)}")
        _check(self.shape in STUDENT_SHAPES, "student.shape",
               f"'{self.shape}' is not one of {', '.join(s for s in STUDENT_SHAPES if s)} (or empty)")
        _check(not (self.trim_vocab and self.kind == "causal"), "student.trim_vocab",
               "vocabulary trimming is for seq2seq students derived from the teacher; set it to false")
        _check(self.kind != "causal" or bool(self.path), "student.path",
               "a causal-LM student is loaded: set student.path to its local directory")
        for name in ("depth_ratio", "width_ratio", "heads_ratio"):
            _check(0 < getattr(self, name) <= 1, f"student.{name}", f"{getattr(self, name)} must be in (0, 1]")
        _check(0 <= self.decoder_depth_ratio <= 1, "student.decoder_depth_ratio", "must be in [0, 1] (0 = same as depth_ratio)")


LR_SCHEDULES = ("cosine", "wsd", "linear", "constant")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
"""train.precision: auto resolves per device (:func:`distilmt.training.precision.resolve_precision`)."""
AUTO_EVAL_UPDATES = 2000
"""train.eval_steps=auto: an epoch of at most this many updates is evaluated (and checkpointed) at its end, a longer
one every this many updates (:meth:`TrainConfig.eval_interval`). At the quick preset's pace on 2 CPU cores that is
about 7 minutes of training between evaluations; the built-in corpus's epochs (a few hundred updates) stay per epoch."""
EVAL_STEPS_WORDS = ("auto", "epoch")


@dataclass
class TrainConfig:
    SECTION = "train"  # used as teacher_train and student_train: from_dict names the one meant

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
    precision: str = _help("mixed-precision autocast (weights and losses stay fp32): auto (bf16 where the device "
                           "has it: a CUDA GPU with bf16, a CPU with AVX512-BF16 or AMX; else fp16 on a CUDA GPU; "
                           "else fp32), or bf16, fp16, fp32 to force one (one the device cannot run is refused); "
                           "default auto. The old bf16: true / false still reads as bf16 / fp32 where precision is "
                           "not set", "")  # "" = not set: auto, or what an old bf16 says
    eval_every_epoch: bool = _help("generate on dev and compute BLEU during training, when eval_steps says (false = "
                                   "no evaluation: no best-checkpoint selection, no early stopping)", True)
    eval_steps: int | str = _help(f"when to evaluate on dev and save a checkpoint: auto (at each epoch end when an "
                                  f"epoch has at most {AUTO_EVAL_UPDATES} updates, else every {AUTO_EVAL_UPDATES} "
                                  "updates), epoch (at each epoch end), or a whole number N (every N updates, and at "
                                  "the last); the best checkpoint is chosen among these evaluations and "
                                  "early_stopping_patience counts them", "auto")
    early_stopping_patience: int = _help("stop after this many evaluations without dev-BLEU gain (0 = off)", 0)
    seed: int = _help("random seed", 1)
    max_eval_tokens: int = _help("dev sentences longer than this many tokens (or the model's position table) are "
                                 "cut to it for dev BLEU; the count is logged", 256)
    max_nonfinite_steps: int = _help("updates with a NaN/inf loss or gradient that are skipped before the training "
                                     "stops with an error (the weights are never updated by them)", 10)
    keep_checkpoints: bool = _help("keep checkpoints/ (optimizer state) in a finished model directory; by default "
                                   "it is removed once the stage is complete", False)
    eval_beams: int = _help("beam size for dev BLEU during training", 1)
    bf16: InitVar[bool | None] = None  # the old name of precision (true = bf16, false = fp32); not stored

    def __post_init__(self, bf16: bool | None = None):
        if bf16 is not None:  # a config written before precision existed: true = bf16, false = fp32
            _check(isinstance(bf16, bool), "train.bf16", f"{bf16!r}: expected true or false (it is the old name of "
                   "precision: better set precision to auto, bf16, fp16 or fp32)")
        if not self.precision:  # not set: what the old bf16 says, else auto; a precision that is set wins
            self.precision = "auto" if bf16 is None else "bf16" if bf16 else "fp32"
        _check(self.precision in PRECISIONS, "train.precision",
               f"{self.precision!r} is not one of {', '.join(PRECISIONS)}")
        _check(self.learning_rate > 0, "train.learning_rate", "must be positive")
        _check(self.weight_decay >= 0, "train.weight_decay", f"{self.weight_decay!r} must not be negative (0 = off)")
        _check(self.max_grad_norm >= 0, "train.max_grad_norm", f"{self.max_grad_norm!r} must not be negative: 0 "
               "turns clipping off, a negative norm would too, silently")
        _check(self.epochs > 0 or self.max_steps > 0, "train.epochs", "set epochs > 0 or max_steps > 0")
        _check(self.max_steps >= 0 and self.warmup_steps >= 0, "train.max_steps", "steps must not be negative")
        _check(self.lr_schedule in LR_SCHEDULES, "train.lr_schedule",
               f"'{self.lr_schedule}' is not one of {', '.join(LR_SCHEDULES)}")
        _check(0 < self.decay_fraction <= 1, "train.decay_fraction", f"{self.decay_fraction} must be in (0, 1]")
        _check(self.batch_tokens >= 64, "train.batch_tokens", f"{self.batch_tokens} is too small; use at least 64")
        _check(self.grad_accum >= 1, "train.grad_accum", "must be at least 1")
        _check(self.max_eval_tokens >= 8, "train.max_eval_tokens", "must be at least 8")
        _check(self.max_nonfinite_steps >= 1, "train.max_nonfinite_steps", "must be at least 1")
        _check(0 <= self.label_smoothing < 1, "train.label_smoothing", "must be in [0, 1)")
        _check(self.eval_beams >= 1, "train.eval_beams", "must be at least 1")
        if isinstance(self.eval_steps, str) and self.eval_steps.strip().isdigit():  # "500" from a JSON or a quote
            self.eval_steps = int(self.eval_steps)
        _check(self.eval_steps in EVAL_STEPS_WORDS if isinstance(self.eval_steps, str) else
               isinstance(self.eval_steps, int) and not isinstance(self.eval_steps, bool) and self.eval_steps >= 1,
               "train.eval_steps", f"{self.eval_steps!r} must be auto, epoch or a whole number of updates >= 1 (to "
               "train without evaluating, set eval_every_epoch: false)")
        _check(isinstance(self.early_stopping_patience, int) and self.early_stopping_patience >= 0,
               "train.early_stopping_patience", f"{self.early_stopping_patience!r} must be a whole number >= 0 "
               "(0 = off)")

    def eval_interval(self, updates_per_epoch: int) -> int:
        """Updates between two evaluations (and checkpoints), or 0 for at each epoch end, as ``eval_steps`` decides
        for an epoch of ``updates_per_epoch`` optimizer updates (auto: see :data:`AUTO_EVAL_UPDATES`)."""
        if self.eval_steps == "epoch":
            return 0
        if self.eval_steps == "auto":
            return 0 if updates_per_epoch <= AUTO_EVAL_UPDATES else AUTO_EVAL_UPDATES
        return int(self.eval_steps)


SEQKD_TRAIN_ON = ("original", "distilled", "mix")
SEQKD_ENGINES = ("auto", "hf", "ct2")
CT2_QUANTIZATIONS = ("auto", "int8", "int8_float32", "int16", "float32", "float16", "bfloat16", "int8_float16",
                     "int8_bfloat16")


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
    max_repetition: float = _help("drop pairs whose label loops: its share of repeated word trigrams (1 - distinct "
                                  "/ all) is above this (e.g. 0.1; 0 = off)", 0.0)
    train_on: str = _help("what student-seqkd learns from: distilled (the teacher's translations), original "
                          "(the references) or mix (all references plus mix_ratio of the distilled pairs)",
                          "distilled")
    mix_ratio: float = _help("for train_on=mix: share of the sources whose distilled pair is added to the original "
                             "pairs (a seeded random sample; 1 = both full sets)", 1.0)
    with_token_kd: bool = _help("also apply token-level KD (the distill section, live teacher) on the distilled "
                                "targets; off = no teacher in memory while student-seqkd trains", False)
    engine: str = _help("what decodes the teacher: hf (transformers generate), ct2 (the teacher converted once to "
                        "CTranslate2, RUN_DIR/teacher-ct2-QUANTIZATION/; beam search only, several times faster) or "
                        "auto (ct2 when ctranslate2 is installed, the teacher is a seq2seq model it converts and "
                        "labels are not sampled, else hf; a corpus already begun keeps its engine)", "auto")
    ct2_quantization: str = _help("weights of the CTranslate2 teacher: auto (int8 on a CPU, float16 on a GPU), int8, "
                                  "int8_float32, int16, float32, float16, bfloat16, int8_float16, int8_bfloat16",
                                  "auto")
    agreement_sources: int = _help("with the ct2 engine, sources also translated by the HF teacher (same beam) to "
                                   "report the engines' agreement in distilled/stats.json (0 = off)", 64)

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
        _check(0 <= self.max_repetition < 1, "seqkd.max_repetition",
               f"{self.max_repetition} must be in [0, 1) (a share of repeated trigrams; 0 = off)")
        _check(self.min_score is None or self.min_score <= 0, "seqkd.min_score",
               f"{self.min_score} is a log-probability per token, which is <= 0: use e.g. -1.5, or leave it unset")
        _check(self.train_on in SEQKD_TRAIN_ON, "seqkd.train_on",
               f"'{self.train_on}' is not one of {', '.join(SEQKD_TRAIN_ON)}")
        _check(0 < self.mix_ratio <= 1, "seqkd.mix_ratio", f"{self.mix_ratio} must be in (0, 1]")
        _check(self.engine in SEQKD_ENGINES, "seqkd.engine",
               f"'{self.engine}' is not one of {', '.join(SEQKD_ENGINES)}")
        _check(self.ct2_quantization in CT2_QUANTIZATIONS, "seqkd.ct2_quantization",
               f"'{self.ct2_quantization}' is not one of {', '.join(CT2_QUANTIZATIONS)}")
        _check(not (self.engine == "ct2" and self.do_sample), "seqkd.engine",
               "ct2 decodes with beam search only (its sampling cannot be reseeded per shard, so a resumed run would "
               "differ): use seqkd.engine=hf or auto for sampled labels")
        _check(isinstance(self.agreement_sources, int) and self.agreement_sources >= 0, "seqkd.agreement_sources",
               f"{self.agreement_sources!r} must be a whole number >= 0 (0 = off)")


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
    max_source_tokens: int = _help("test sources longer than this many tokens (or the model's position table) are "
                                   "cut to it before translating; the count is reported per model", 256)
    samples_in_report: int = _help("sample translations shown in report.md", 8)
    speed_sentences: int = _help("test sentences timed for speed and memory, each model in its own process "
                                 "(0 = skip speed)", 64)
    speed_rounds: int = _help("interleaved timing rounds: each round times every model once (in its own process), "
                              "and each model's figure is its best round (the speed-up: the ratio of the best "
                              "rounds)", 3)
    speed_min_seconds: float = _help("each timed pass repeats the timed sentences until it has run this many seconds "
                                     "(a fast engine is not timed over a few milliseconds)", 0.5)
    teacher_ct2: bool = _help("also evaluate the teacher converted to CTranslate2 int8 (the conversion label "
                              "generation uses, RUN_DIR/teacher-ct2-int8): its row shows what the fast engine keeps",
                              False)
    export_ct2: bool = _help("export the KD student to CTranslate2 int8 and evaluate it too", True)
    semantic: bool = _help("semantic similarity to the references (BERTScore F1 for English, e5 cosine otherwise) "
                           "when pip install 'distilmt[semantic]' is installed", True)

    def __post_init__(self):
        _check(self.num_beams >= 1, "eval.num_beams", "must be at least 1")
        _check(self.batch_size >= 1, "eval.batch_size", "must be at least 1")
        _check(self.max_new_tokens >= 1, "eval.max_new_tokens", "must be at least 1")
        _check(self.max_source_tokens >= 8, "eval.max_source_tokens", "must be at least 8")
        _check(self.speed_sentences >= 0, "eval.speed_sentences", "must not be negative")
        _check(self.speed_rounds >= 1, "eval.speed_rounds", "must be at least 1")
        _check(self.speed_min_seconds >= 0, "eval.speed_min_seconds", "must not be negative (0 = one pass)")


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


PLACEHOLDERS = frozenset({"src_lang", "tgt_lang", "source"})
"""The names a prompt template may use."""


def template_problem(template: str) -> str | None:
    """Why ``template`` is not a usable prompt template (None when it is); ``auto`` is always usable."""
    if template == "auto":
        return None
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        return f"not a valid template ({exc}); write literal braces as {{{{ and }}}}"
    unknown = sorted(names - PLACEHOLDERS)
    if unknown:
        return f"unknown placeholder {{{unknown[0]}}}; use only {{src_lang}}, {{tgt_lang}} and {{source}}"
    if "source" not in names:
        return "has no {source} placeholder: the model would never see the sentence to translate"
    return None


@dataclass
class PromptConfig:
    """How a causal-LM teacher or student is asked to translate (distilmt.data.prompt)."""

    template: str = _help("the prompt before the target: a string with {src_lang}, {tgt_lang} (language names) and "
                          "{source}, or auto = the tokenizer's chat template when it has one, else 'Translate this "
                          "{src_lang} text into {tgt_lang}.\\n{src_lang}: {source}\\n{tgt_lang}:'", "auto")

    def __post_init__(self):
        problem = template_problem(self.template)
        _check(problem is None, "prompt.template", str(problem))


