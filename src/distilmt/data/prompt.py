"""How a causal LM is asked to translate, and its training examples.

A causal LM translates by continuing a prompt. One training example is one sequence::

    input_ids = prompt(source) + target + eos
    labels    = -100 x len(prompt) + target + eos        (-100 on padding too)

so the loss (cross-entropy and token-level KD alike) is on the target tokens only. The labels are not shifted
here: as in every Hugging Face causal LM, the logits at position t predict token t + 1, and the trainer drops the
last logit and the first label.

The prompt (:class:`TranslationPrompt`) is ``prompt.template``, a string with the placeholders ``{src_lang}``,
``{tgt_lang}`` and ``{source}``; ``auto`` uses the tokenizer's chat template when it has one (the user turn asks
for the translation, the assistant turn is the target, closed by the tokenizer's eos, e.g. ``<|im_end|>``) and
:data:`DEFAULT_TEMPLATE` otherwise.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from ..config import template_problem
from ..losses import IGNORE_INDEX

DEFAULT_TEMPLATE = "Translate this {src_lang} text into {tgt_lang}.\n{src_lang}: {source}\n{tgt_lang}:"


CHAT_INSTRUCTION = ("Translate the following {src_lang} text into {tgt_lang}. Reply with the translation only.\n\n"
                    "{source}")


LANGUAGE_NAMES = {"en": "English", "hu": "Hungarian", "zh": "Chinese", "de": "German", "fr": "French",
                  "es": "Spanish", "it": "Italian", "pt": "Portuguese", "ru": "Russian", "ja": "Japanese",
                  "ko": "Korean", "ar": "Arabic", "nl": "Dutch", "pl": "Polish", "cs": "Czech", "ro": "Romanian",
                  "tr": "Turkish", "uk": "Ukrainian", "fi": "Finnish", "sv": "Swedish", "vi": "Vietnamese"}


def language_name(code: str) -> str:
    """English name of a language code for the prompt (en -> English); unknown codes are used as they are."""
    return LANGUAGE_NAMES.get(code.lower(), code)


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
