"""Causal language models (e.g. the Qwen2 family) as translation teachers and students.

A causal LM translates by continuing a prompt. One training example is one sequence::

    input_ids = prompt(source) + target + eos
    labels    = -100 x len(prompt) + target + eos        (-100 on padding too)

so the loss (cross-entropy and token-level KD alike) is on the target tokens only. The labels are not shifted
here: as in every Hugging Face causal LM, the logits at position t predict token t + 1, and the trainer drops the
last logit and the first label (:func:`shift_for_loss`).

The prompt (:class:`TranslationPrompt`) is ``prompt.template``, a string with the placeholders ``{src_lang}``,
``{tgt_lang}`` and ``{source}``; ``auto`` uses the tokenizer's chat template when it has one (the user turn asks
for the translation, the assistant turn is the target, closed by the tokenizer's eos, e.g. ``<|im_end|>``) and
:data:`DEFAULT_TEMPLATE` otherwise. Generation left-pads the prompts, stops at eos and returns only the
continuation.

Token-level KD between two models needs one vocabulary. :func:`check_shared_vocabulary` compares the *real*
vocabulary (``len(tokenizer)``, the ids of a probe text, the special and added tokens), not the embedding matrices:
models of one family are often padded to different sizes (Qwen2.5: 151936 vs 152064 rows for 151665 tokens), and
KD then runs on the logits cut to the shared real size. Between different tokenizers only sequence-level KD works
(:mod:`distilmt.seqkd`: the causal teacher's translations become plain-text labels).
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Sequence
from pathlib import Path

import torch

from .losses import IGNORE_INDEX
from .models.build import PROBE_TEXT, ModelError, tokenizer_next_to

DEFAULT_TEMPLATE = "Translate this {src_lang} text into {tgt_lang}.\n{src_lang}: {source}\n{tgt_lang}:"
CHAT_INSTRUCTION = ("Translate the following {src_lang} text into {tgt_lang}. Reply with the translation only.\n\n"
                    "{source}")
PLACEHOLDERS = frozenset({"src_lang", "tgt_lang", "source"})
LANGUAGE_NAMES = {"en": "English", "hu": "Hungarian", "zh": "Chinese", "de": "German", "fr": "French",
                  "es": "Spanish", "it": "Italian", "pt": "Portuguese", "ru": "Russian", "ja": "Japanese",
                  "ko": "Korean", "ar": "Arabic", "nl": "Dutch", "pl": "Polish", "cs": "Czech", "ro": "Romanian",
                  "tr": "Turkish", "uk": "Ukrainian", "fi": "Finnish", "sv": "Swedish", "vi": "Vietnamese"}


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


def language_name(code: str) -> str:
    """English name of a language code for the prompt (en -> English); unknown codes are used as they are."""
    return LANGUAGE_NAMES.get(code.lower(), code)


# -- loading ----------------------------------------------------------------------------------------------
def is_causal_dir(path: str | Path) -> bool:
    """True when ``path`` holds a Hugging Face model that is not an encoder-decoder (read from config.json; a
    CTranslate2 directory's config.json has no model_type and is not one)."""
    import json

    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        saved = json.loads(config.read_text(encoding="utf-8"))
    except ValueError:
        return False
    return "model_type" in saved and not saved.get("is_encoder_decoder", False)


def load_causal(path: str | Path, role: str = "teacher"):
    """``(model, tokenizer)`` of a causal LM saved in a local directory, with a one-line error otherwise.

    A tokenizer without a pad token pads with its eos (the attention mask and -100 labels hide the padding).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ModelError(f"{path}: not a Hugging Face model directory (no config.json); set {role}.path to a "
                         "directory saved with save_pretrained")
    config = AutoConfig.from_pretrained(path)
    if getattr(config, "is_encoder_decoder", False):
        raise ModelError(f"{path}: '{config.model_type}' is an encoder-decoder (seq2seq) model; set {role}.kind "
                         "to seq2seq, or point it at a causal LM")
    tokenizer = tokenizer_next_to(path)
    if tokenizer.eos_token_id is None:
        raise ModelError(f"{path}: its tokenizer has no eos token, so a translation could never end; set "
                         "eos_token in tokenizer_config.json")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        model = AutoModelForCausalLM.from_pretrained(path)
    except ValueError as exc:
        raise ModelError(f"{path}: '{config.model_type}' is not a causal LM transformers can load "
                         f"({str(exc).splitlines()[0]})") from None
    return model, tokenizer


# -- prompt and training examples ----------------------------------------------------------------------------
class TranslationPrompt:
    """The translation prompt of one language pair for one tokenizer (see the module doc)."""

    def __init__(self, tokenizer, template: str = "auto", src_lang: str = "en", tgt_lang: str = "hu"):
        problem = template_problem(template)
        if problem:
            raise ValueError(f"prompt.template: {problem}")
        self.tokenizer = tokenizer
        self.template = template
        self.src_lang, self.tgt_lang = src_lang, tgt_lang
        self.chat = template == "auto" and bool(getattr(tokenizer, "chat_template", None))
        if template == "auto" and not self.chat:
            self.template = DEFAULT_TEMPLATE

    @classmethod
    def from_config(cls, tokenizer, prompt_cfg, data_cfg) -> "TranslationPrompt":
        return cls(tokenizer, prompt_cfg.template, data_cfg.source_lang, data_cfg.target_lang)

    @property
    def eos_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_token_id

    def _fill(self, template: str, source: str) -> str:
        return template.format(src_lang=language_name(self.src_lang), tgt_lang=language_name(self.tgt_lang),
                               source=source)

    def text(self, source: str) -> str:
        """The prompt as text: the chat template's user turn plus the opened assistant turn, or the template."""
        if self.chat:
            messages = [{"role": "user", "content": self._fill(CHAT_INSTRUCTION, source)}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self._fill(self.template, source)

    def prompt_ids(self, source: str) -> list[int]:
        """Token ids of the prompt; a plain template gets the tokenizer's bos first when it has one (a chat
        template writes its own)."""
        ids = self.tokenizer(self.text(source), add_special_tokens=False)["input_ids"]
        bos = self.tokenizer.bos_token_id
        if not self.chat and bos is not None and bos != self.eos_token_id:
            ids = [bos, *ids]
        return ids

    def target_ids(self, target: str) -> list[int]:
        """Token ids of the target followed by eos. After a plain template ending in a non-space character the
        target is written after one space, as the model would continue the text."""
        if not self.chat and self.template and not self.template[-1].isspace():
            target = " " + target
        return [*self.tokenizer(target, add_special_tokens=False)["input_ids"], self.eos_token_id]

    def example(self, source: str, target: str) -> dict[str, list[int]]:
        """``{"input_ids": prompt + target + eos, "labels": -100 on the prompt, then target + eos}``."""
        prompt, target_ids = self.prompt_ids(source), self.target_ids(target)
        return {"input_ids": prompt + target_ids, "labels": [IGNORE_INDEX] * len(prompt) + target_ids}

    def fingerprint(self) -> str:
        """What decides the prompt text (template or chat template, languages), for the labels' fingerprint."""
        what = repr((self.template, self.chat and self.tokenizer.chat_template, self.src_lang, self.tgt_lang))
        return hashlib.sha256(what.encode("utf-8")).hexdigest()[:16]


class CausalDataset(torch.utils.data.Dataset):
    """Prompted (source, target) pairs as causal-LM examples (:meth:`TranslationPrompt.example`); pairs whose
    source or target is longer than ``max_tokens`` tokens are dropped (counted in ``dropped``)."""

    def __init__(self, pairs: Sequence[tuple[str, str]], prompt: TranslationPrompt, max_tokens: int = 0):
        self.examples, self.dropped = [], 0
        for source, target in pairs:
            example = prompt.example(source, target)
            n_target = sum(1 for label in example["labels"] if label != IGNORE_INDEX)
            if max_tokens and (n_target > max_tokens + 1
                               or len(prompt.tokenizer(source, add_special_tokens=False)["input_ids"]) > max_tokens):
                self.dropped += 1
                continue
            self.examples.append(example)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        return self.examples[index]

    def lengths(self) -> list[int]:
        """Padded cost of each example: its whole sequence (prompt + target)."""
        return [len(e["input_ids"]) for e in self.examples]


class CausalCollator:
    """Right-pads causal examples: ``input_ids`` with the pad id, ``attention_mask`` 0 and ``labels`` -100 there."""

    def __init__(self, pad_token_id: int):
        self.pad = pad_token_id

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        n, width = len(examples), max(len(e["input_ids"]) for e in examples)
        input_ids = torch.full((n, width), self.pad, dtype=torch.long)
        attention_mask = torch.zeros((n, width), dtype=torch.long)
        labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
        for row, example in enumerate(examples):
            length = len(example["input_ids"])
            input_ids[row, :length] = torch.tensor(example["input_ids"])
            attention_mask[row, :length] = 1
            labels[row, :length] = torch.tensor(example["labels"])
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def shift_for_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor | None, labels: torch.Tensor):
    """Align a causal LM's outputs with its labels: the logits at position t predict token t + 1, so drop the last
    logit of both models and the first label. With a teacher the student's logits are cut to the teacher signal's
    vocabulary (the shared real vocabulary, see :func:`check_shared_vocabulary`)."""
    student = student_logits[:, :-1]
    teacher = None
    if teacher_logits is not None:
        teacher = teacher_logits[:, :-1]
        student = student[..., : teacher.shape[-1]]
    return student, teacher, labels[:, 1:]


# -- vocabulary ---------------------------------------------------------------------------------------------
def _special_ids(tokenizer) -> dict[str, int | None]:
    ids = {f"{name}_token": getattr(tokenizer, f"{name}_token_id", None) for name in ("eos", "bos", "unk")}
    ids.update(tokenizer.get_added_vocab())
    return ids


def vocabulary_difference(teacher_tokenizer, student_tokenizer) -> str | None:
    """How two tokenizers' real vocabularies differ (None when they are the same)."""
    n_t, n_s = len(teacher_tokenizer), len(student_tokenizer)
    if n_t != n_s:
        return f"the teacher's tokenizer has {n_t:,} tokens and the student's {n_s:,}"
    if teacher_tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"] != \
            student_tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]:
        return "their tokenizers map the same text to different token ids"
    special_t, special_s = _special_ids(teacher_tokenizer), _special_ids(student_tokenizer)
    for name in sorted(set(special_t) | set(special_s)):
        if special_t.get(name) != special_s.get(name):
            return f"the special token {name} has id {special_t.get(name)} in the teacher and " \
                   f"{special_s.get(name)} in the student"
    return None


def check_shared_vocabulary(teacher_tokenizer, student_tokenizer, teacher_model=None, student_model=None,
                            teacher_name: str = "teacher", student_name: str = "student") -> int:
    """The real vocabulary size two models share, for token-level KD; a ModelError naming both otherwise.

    Only the tokenizers' vocabularies are compared (size, probe-text ids, special and added tokens): embedding
    matrices padded to different sizes pass, and each model's output layer must merely cover the vocabulary.
    KD then compares the logits cut to the returned size.
    """
    problem = vocabulary_difference(teacher_tokenizer, student_tokenizer)
    if problem:
        raise ModelError(f"token-level KD between {teacher_name} and {student_name} needs one vocabulary, but "
                         f"{problem}; use sequence-level KD instead (seqkd.enabled=true, `distilmt generate-labels`), "
                         "which works across tokenizers")
    size = len(teacher_tokenizer)
    for model, name in ((teacher_model, teacher_name), (student_model, student_name)):
        if model is not None and model.get_output_embeddings().weight.shape[0] < size:
            rows = model.get_output_embeddings().weight.shape[0]
            raise ModelError(f"{name}: its output layer has {rows:,} rows, fewer than its {size:,}-token tokenizer; "
                             "the model and tokenizer in that directory do not belong together")
    return size


# -- generation ---------------------------------------------------------------------------------------------
def _stop_ids(model, tokenizer) -> list[int]:
    """The tokenizer's eos plus any the model's generation config lists (Qwen2.5-Instruct: <|im_end|> and
    <|endoftext|>)."""
    configured = getattr(model.generation_config, "eos_token_id", None)
    configured = configured if isinstance(configured, (list, tuple)) else [configured]
    return list(dict.fromkeys([tokenizer.eos_token_id, *(i for i in configured if i is not None)]))


def until_stop(continuation: torch.Tensor, stop_ids: Sequence[int]) -> torch.Tensor:
    """Mask of each row's tokens up to and including its first stop token (every token when there is none)."""
    is_stop = torch.isin(continuation, torch.tensor(list(stop_ids), device=continuation.device)).long()
    return (torch.cumsum(is_stop, dim=1) - is_stop) == 0


@torch.no_grad()
def generate_continuations(model, prompt: TranslationPrompt, sources: Sequence[str], batch_tokens: int = 4000,
                           max_new_tokens: int = 128, num_return_sequences: int = 1, score: bool = False,
                           **options) -> list[list[tuple[str, float | None]]]:
    """Each source's ``num_return_sequences`` continuations of its prompt, as ``(text, score)`` in input order.

    Prompts are sorted by length and cut into batches of at most ``batch_tokens`` prompt tokens, left-padded, and
    generated until every row has produced eos (or ``max_new_tokens``, capped by the model's positions). The text
    is the continuation alone, up to its first eos, decoded without special tokens. With ``score=True`` the score
    is the mean log-probability per continuation token (eos included) under ``model`` at T = 1, teacher-forced;
    else None. ``options`` go to ``generate`` (num_beams, length_penalty, do_sample, top_p, temperature, ...).
    """
    from .data.batching import token_batches
    from .data.readers import normalize
    from .seqkd import _max_positions

    if not sources:
        return []
    model.eval()
    tokenizer, device = prompt.tokenizer, model.device
    encoded = [prompt.prompt_ids(s) for s in sources]
    stop = _stop_ids(model, tokenizer)
    results: list[list[tuple[str, float | None]]] = [[] for _ in sources]
    for batch in token_batches([len(ids) for ids in encoded], batch_tokens, seed=0):
        padded = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, padding_side="left", return_tensors="pt")
        input_ids, mask = padded["input_ids"].to(device), padded["attention_mask"].to(device)
        width = input_ids.shape[1]
        room = max(1, min(max_new_tokens, _max_positions(model, tokenizer) - width))
        sequences = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=room,
                                   num_return_sequences=num_return_sequences, eos_token_id=stop,
                                   pad_token_id=prompt.pad_token_id, **options)
        continuation = sequences[:, width:]
        keep = until_stop(continuation, stop)
        scores = _continuation_scores(model, input_ids.repeat_interleave(num_return_sequences, 0),
                                      mask.repeat_interleave(num_return_sequences, 0), continuation, keep) \
            if score else [None] * len(continuation)
        for row, (ids, kept, value) in enumerate(zip(continuation.tolist(), keep.tolist(), scores)):
            text = tokenizer.decode([t for t, k in zip(ids, kept) if k], skip_special_tokens=True)
            results[batch[row // num_return_sequences]].append((normalize(text), value))
    return results


@torch.no_grad()
def _continuation_scores(model, input_ids, attention_mask, continuation, keep) -> list[float]:
    """Mean log-probability per kept continuation token, teacher-forced after the left-padded prompt."""
    full = torch.cat([input_ids, continuation], dim=1)
    mask = torch.cat([attention_mask, keep.long()], dim=1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # as generate numbers them under left padding
    logits = model(input_ids=full, attention_mask=mask, position_ids=positions, use_cache=False).logits.float()
    width = input_ids.shape[1]
    log_probs = torch.log_softmax(logits[:, width - 1:-1], dim=-1)
    token_logp = log_probs.gather(-1, continuation.unsqueeze(-1)).squeeze(-1)
    return ((token_logp * keep).sum(1) / keep.sum(1).clamp(min=1)).tolist()


PROMPT_FILE = "prompt.json"
"""Written next to every causal model a run holds: ``{"template", "src_lang", "tgt_lang"}``, how it is prompted."""


def save_prompt(model_dir: str | Path, prompt_cfg, data_cfg) -> Path:
    """Write ``model_dir/prompt.json`` (atomically) from the run's ``prompt`` and ``data`` config sections, so
    :func:`distilmt.evaluation.translate.open_model` can translate with that directory alone."""
    import json

    from .data.readers import write_text_atomic

    return write_text_atomic(Path(model_dir) / PROMPT_FILE, json.dumps(
        {"template": prompt_cfg.template, "src_lang": data_cfg.source_lang, "tgt_lang": data_cfg.target_lang},
        indent=1, ensure_ascii=False) + "\n")


def read_prompt(model_dir: str | Path) -> dict:
    """``{"template", "src_lang", "tgt_lang"}`` of ``model_dir/prompt.json``; a ModelError saying how to write it
    when it is missing or incomplete."""
    import json

    path = Path(model_dir) / PROMPT_FILE
    fix = (f'write {path} as {{"template": "auto", "src_lang": "en", "tgt_lang": "hu"}} (your languages; template '
           "as in prompt.template)")
    if not path.is_file():
        raise ModelError(f"{model_dir}: a causal LM translates by continuing a prompt, and it has no {PROMPT_FILE}; "
                         f"{fix}")
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        prompt = {key: str(saved[key]) for key in ("template", "src_lang", "tgt_lang")}
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{path}: not a usable prompt file ({exc.__class__.__name__}: {exc}); {fix}") from None
    problem = template_problem(prompt["template"])
    if problem:
        raise ModelError(f"{path}: template {problem}")
    return prompt


class CausalTranslator:
    """A causal LM with its tokenizer and prompt as a translator: ``translate`` for evaluation (the
    :class:`~distilmt.evaluation.translate.Translator` interface, opened by ``open_model`` from a directory with a
    ``prompt.json``), and ``translate_scored`` for :func:`distilmt.seqkd.translate_scored` (which hands a causal
    teacher over to it), so a causal teacher writes the distilled corpus of a seq2seq student (different tokenizers
    are fine there)."""

    engine = "hf-causal"

    def __init__(self, model, prompt: TranslationPrompt, path: str | Path | None = None):
        self.model, self.prompt = model.eval(), prompt
        self.tokenizer = prompt.tokenizer
        self.path = Path(path) if path is not None else None

    @classmethod
    def load(cls, path: str | Path, template: str = "auto", src_lang: str = "en", tgt_lang: str = "hu",
             device: str | None = None) -> "CausalTranslator":
        model, tokenizer = load_causal(path)
        if device is not None:
            model = model.to(device)
        return cls(model, TranslationPrompt(tokenizer, template, src_lang, tgt_lang), path)

    @classmethod
    def open(cls, path: str | Path) -> "CausalTranslator":
        """The causal LM in ``path`` prompted as its ``prompt.json`` says (see :func:`save_prompt`)."""
        prompt = read_prompt(path)
        return cls.load(path, prompt["template"], prompt["src_lang"], prompt["tgt_lang"])

    @property
    def device(self) -> torch.device:
        return self.model.device

    def translate(self, sentences: Sequence[str], num_beams: int = 4, batch_size: int = 64,
                  max_new_tokens: int = 128) -> list[str]:
        out = generate_continuations(self.model, self.prompt, sentences, batch_tokens=batch_size * 64,
                                     max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False)
        return [hyps[0][0] for hyps in out]

    def translate_scored(self, sources: Sequence[str], cfg, seed: int | None = None) -> list[list[tuple[str, float]]]:
        """Sequence-level KD labels with their teacher scores, from a :class:`~distilmt.config.SeqKDConfig`."""
        options = dict(num_beams=cfg.num_beams, length_penalty=cfg.length_penalty, do_sample=cfg.do_sample)
        if cfg.do_sample:
            options.update(top_p=cfg.top_p, temperature=cfg.temperature)
        device = self.model.device
        with torch.random.fork_rng(devices=[] if device.type != "cuda" else None, enabled=cfg.do_sample):
            if cfg.do_sample:
                torch.manual_seed(cfg.seed if seed is None else seed)
            return generate_continuations(self.model, self.prompt, sources, cfg.batch_tokens, cfg.max_new_tokens,
                                          cfg.num_return_sequences, score=True, **options)

    def num_parameters(self) -> dict[str, int | None]:
        from .evaluation.size import count_parameters

        return count_parameters(self.model)

    def size_mb(self) -> float | None:
        from .evaluation.size import dir_size_mb

        return dir_size_mb(self.path) if self.path is not None else None


def labels_teacher(cfg, teacher_dir: str | Path, teacher_id: str):
    """``(teacher_id, load)`` for :func:`distilmt.seqkd.build_distilled` with a causal-LM teacher: the id gains
    the prompt's fingerprint (another prompt makes other labels), ``load()`` gives a :class:`CausalTranslator` on
    the GPU when there is one. ``cfg`` is the run's :class:`~distilmt.config.RunConfig`."""
    from transformers import AutoTokenizer

    prompt = TranslationPrompt.from_config(AutoTokenizer.from_pretrained(str(teacher_dir)), cfg.prompt, cfg.data)

    def load() -> CausalTranslator:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        return CausalTranslator.load(teacher_dir, cfg.prompt.template, cfg.data.source_lang, cfg.data.target_lang,
                                     device)

    return f"{teacher_id}+prompt:{prompt.fingerprint()}", load


# -- training -----------------------------------------------------------------------------------------------
_UNSUPPORTED = {"hidden_weight": 0.0, "attention_weight": 0.0, "on_policy_ratio": 0.0, "mutual": False,
                "teacher_cache": False}


def train_causal(model, prompt: TranslationPrompt, train_pairs, cfg, out_dir, log_dir, max_tokens: int,
                 teacher=None, distill=None, resume: bool = False, callbacks=None, name: str = ""):
    """Train a causal LM student on prompted pairs with :class:`~distilmt.training.DistilTrainer` (CE on the
    target tokens, plus token-level KD from ``teacher``, a :class:`~distilmt.teachers.CausalTeacher`, when
    given); saved to ``out_dir`` with its tokenizer. No dev BLEU during training (the evaluation comes after)."""
    from .config import ConfigError
    from .training import train_seq2seq

    if distill is not None:
        for key, off in _UNSUPPORTED.items():
            if getattr(distill, key) != off:
                raise ConfigError(f"distill.{key}: not supported for a causal-LM student yet; set it to {off}")
        if distill.teachers:
            raise ConfigError("distill.teachers: an ensemble is not supported for a causal-LM student yet; set it "
                              "to []")
    return train_seq2seq(model, prompt.tokenizer, train_pairs, [], cfg, out_dir, log_dir, max_tokens,
                         teacher=teacher, distill=distill, resume=resume, callbacks=callbacks, name=name,
                         prompt=prompt)


def distill_causal(cfg, run_dir: Path, names: Sequence[str], resume: bool = False) -> dict:
    """:func:`distilmt.pipeline.distill` when the teacher or the student is a causal LM; returns ``{name: trainer}``.

    * a causal student (``student.kind=causal``, loaded from ``student.path`` afresh for every student) learns
      from prompted pairs: ``student-baseline`` on the references, ``student-kd`` with token-level KD from the
      run's causal teacher (shared real vocabulary checked first), ``student-seqkd`` on the teacher's translations;
    * a seq2seq student of a causal teacher learns by sequence-level KD only (the vocabularies differ): it is
      derived, as in a run that trains its teacher, from a seq2seq model of shape ``teacher.arch/d_model/...``
      (never trained) with the run's tokenizer, and the monitor (which runs a seq2seq teacher) is off.
    """
    import time

    from .data.corpus import load_splits
    from .models.build import build_model, derive_student
    from .pipeline import SEQKD_STUDENT, STUDENTS, _dev_subset, _seqkd_pairs, is_complete, load_tokenizer, \
        mark_complete
    from .teachers import CausalTeacher
    from .training import train_seq2seq

    run_dir = Path(run_dir)
    splits = load_splits(run_dir / "data")
    trainers = {}
    for name in names:
        out = run_dir / name
        if is_complete(out):
            continue
        pairs, uses_teacher = splits.train, STUDENTS.get(name, False)
        if name == SEQKD_STUDENT:
            pairs, uses_teacher = _seqkd_pairs(cfg, run_dir, splits.train), cfg.seqkd.with_token_kd
        if uses_teacher and cfg.teacher.kind != cfg.student.kind:
            raise ModelError(f"{name}: token-level KD from a {cfg.teacher.kind} teacher to a {cfg.student.kind} "
                             "student needs one vocabulary; use sequence-level KD instead (seqkd.enabled=true, "
                             "seqkd.with_token_kd=false), which works across tokenizers")
        started, tb = time.time(), run_dir / "tb" / name
        if cfg.student.kind == "causal":
            student, tokenizer = load_causal(cfg.student.path, role="student")
            teacher = None
            if uses_teacher:
                teacher_model, teacher_tokenizer = load_causal(run_dir / "teacher")
                size = check_shared_vocabulary(teacher_tokenizer, tokenizer, teacher_model, student,
                                               f"the teacher {cfg.teacher.path}", f"the student {cfg.student.path}")
                teacher = CausalTeacher(teacher_model, size, bf16=cfg.student_train.bf16)
            prompt = TranslationPrompt.from_config(tokenizer, cfg.prompt, cfg.data)
            trainers[name] = train_causal(student, prompt, pairs, cfg.student_train, out, tb, cfg.data.max_tokens,
                                          teacher, cfg.distill if uses_teacher else None, resume, name=name)
            save_prompt(out, cfg.prompt, cfg.data)  # how to prompt it: evaluate/translate open it with this
        else:
            tokenizer = load_tokenizer(run_dir)
            shape = build_model(cfg.teacher, tokenizer, seed=cfg.student_train.seed)
            student = derive_student(shape, cfg.student, seed=cfg.student_train.seed)
            trainers[name] = train_seq2seq(student, tokenizer, pairs, _dev_subset(cfg, splits), cfg.student_train,
                                           out, tb, cfg.data.max_tokens, resume=resume, name=name)
        mark_complete(out, seconds=round(time.time() - started, 1))
    return trainers
