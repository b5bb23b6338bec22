"""How a run's languages reach a model: the one place that says how sources and targets are encoded and how
generation starts.

* tokenizers with language codes (NLLB-200, M2M100, mBART-50): ``tokenizer.src_lang`` / ``tgt_lang``, so sources
  start with the source code and labels with the target code, and generation is forced to start with the target
  code (``forced_bos_token_id``; CTranslate2: ``target_prefix``);
* a text prefix before every source (T5/mT5 task prefix, ``"translate English to Hungarian: "``);
* a target-language token before every source (multilingual opus-mt, ``">>hun<<"``).

:func:`resolve` turns the run's ``data`` section and the teacher's tokenizer into a :class:`LanguageSetup` (a
wrong value is one :class:`~distilmt.errors.ConfigError` naming the key); :meth:`LanguageSetup.apply` writes it
into the tokenizer itself — the codes as ``src_lang``/``tgt_lang``, the prefix and target token under
``tokenizer_config.json``'s ``distilmt_language`` — so every saved copy (the run's tokenizer, each model directory,
the CTranslate2 export) carries it and :func:`setup_of` reads it back. :meth:`LanguageSetup.configure_generation`
puts the forced start token into a model's ``generation_config``, which every Hugging Face generation path reads
(``models.generation``, the trainer's dev BLEU, the monitor). :func:`source_ids` is how every stage encodes sources.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from ..config import DataConfig
from ..errors import ConfigError

CONFIG_KEY = "distilmt_language"
"""The tokenizer_config.json entry holding the source prefix and target token."""

NLLB_CODES = {
    "ar": "arb_Arab", "bg": "bul_Cyrl", "ca": "cat_Latn", "cs": "ces_Latn", "da": "dan_Latn", "de": "deu_Latn",
    "el": "ell_Grek", "en": "eng_Latn", "es": "spa_Latn", "et": "est_Latn", "eu": "eus_Latn", "fa": "pes_Arab",
    "fi": "fin_Latn", "fr": "fra_Latn", "ga": "gle_Latn", "he": "heb_Hebr", "hi": "hin_Deva", "hr": "hrv_Latn",
    "hu": "hun_Latn", "id": "ind_Latn", "is": "isl_Latn", "it": "ita_Latn", "ja": "jpn_Jpan", "ko": "kor_Hang",
    "lt": "lit_Latn", "lv": "lvs_Latn", "mt": "mlt_Latn", "nb": "nob_Latn", "nl": "nld_Latn", "pl": "pol_Latn",
    "pt": "por_Latn", "ro": "ron_Latn", "ru": "rus_Cyrl", "sk": "slk_Latn", "sl": "slv_Latn", "sr": "srp_Cyrl",
    "sv": "swe_Latn", "sw": "swh_Latn", "th": "tha_Thai", "tr": "tur_Latn", "uk": "ukr_Cyrl", "ur": "urd_Arab",
    "vi": "vie_Latn", "zh": "zho_Hans",
}
"""NLLB-200 (FLORES-200) codes of common languages, by ISO 639-1 code."""


@dataclass(frozen=True)
class LanguageSetup:
    """How sources and targets are encoded and how generation starts, for one run direction."""

    src_lang: str | None = None  # the tokenizer's source code (NLLB eng_Latn, M2M100 en); None: no language codes
    tgt_lang: str | None = None
    source_prefix: str = ""  # text before every source (T5 task prefix)
    target_token: str = ""  # token before every source (multilingual opus-mt >>hun<<)
    start_token: str | None = None  # the token every translation starts with (NLLB hun_Latn, M2M100 __hu__)

    def source_text(self, text: str) -> str:
        """``text`` as the encoder reads it: target token, then prefix, then the sentence."""
        return f"{self.target_token} {self.source_prefix}{text}" if self.target_token else self.source_prefix + text

    def forced_bos_token_id(self, tokenizer) -> int | None:
        """The id generation is forced to start with (None when translations start freely)."""
        return tokenizer.convert_tokens_to_ids(self.start_token) if self.start_token else None

    def apply(self, tokenizer):
        """Write the setup into ``tokenizer`` (its language codes and ``distilmt_language``), so it is saved with
        it by ``save_pretrained``; returns the tokenizer."""
        if self.src_lang is not None:
            tokenizer.src_lang = self.src_lang
            tokenizer.tgt_lang = self.tgt_lang
            tokenizer.init_kwargs.update(src_lang=self.src_lang, tgt_lang=self.tgt_lang)
        if self.source_prefix or self.target_token:
            tokenizer.init_kwargs[CONFIG_KEY] = {"source_prefix": self.source_prefix, "target_token": self.target_token}
        else:
            tokenizer.init_kwargs.pop(CONFIG_KEY, None)
        return tokenizer

    def configure_generation(self, model, tokenizer) -> None:
        """Force ``model``'s translations to start with the target code (its ``generation_config``, saved with it);
        a tokenizer without language codes leaves the model as it is."""
        if self.start_token is not None:
            model.generation_config.forced_bos_token_id = self.forced_bos_token_id(tokenizer)

    def to_dict(self) -> dict:
        return asdict(self)


# -- which codes a tokenizer knows ---------------------------------------------------------------------------------
def code_style(tokenizer) -> str | None:
    """``"m2m100"`` (codes ``en``, tokens ``__en__``), ``"token"`` (the code is the token: NLLB ``eng_Latn``,
    mBART-50 ``en_XX``) or None (no language codes: T5, Marian, tokenizers trained here)."""
    if hasattr(tokenizer, "lang_code_to_token"):
        return "m2m100"
    if "src_lang" in dir(type(tokenizer)):
        return "token"
    return None


def known_codes(tokenizer) -> list[str]:
    """The language codes ``tokenizer.src_lang`` accepts."""
    if code_style(tokenizer) == "m2m100":
        return list(tokenizer.lang_code_to_token)
    named = {str(t) for t in tokenizer.special_tokens_map.values() if isinstance(t, str)}
    return [t for t in tokenizer.all_special_tokens if t not in named and t != "<mask>"]


def _code_token(tokenizer, code: str) -> str:
    return tokenizer.lang_code_to_token[code] if code_style(tokenizer) == "m2m100" else code


def _derived_code(tokenizer, lang: str, codes: list[str]) -> str | None:
    """The code of ``lang`` (a data.source_lang/target_lang) in ``tokenizer``, None when it cannot tell."""
    if lang in codes:
        return lang
    return NLLB_CODES[lang] if NLLB_CODES.get(lang) in codes else None


def _examples(codes: Sequence[str], lang: str) -> str:
    like = [c for c in codes if c.lower().startswith(lang.lower()[:2])]
    return ", ".join((like or list(codes))[:6])


def _resolve_code(tokenizer, key: str, given: str, lang: str, codes: list[str]) -> str:
    name = type(tokenizer).__name__
    if given:
        code = given.strip("_") if code_style(tokenizer) == "m2m100" and given.startswith("__") else given
        if code not in codes:
            raise ConfigError(f"data.{key}: '{given}' is not a language code of the teacher's tokenizer ({name}); "
                              f"use one of its codes, e.g. {_examples(codes, lang)}")
        return code
    code = _derived_code(tokenizer, lang, codes)
    if code is None:
        raise ConfigError(f"data.{key}: the teacher's tokenizer ({name}) needs a language code and none is known "
                          f"for '{lang}'; set data.{key} to one of its codes, e.g. {_examples(codes, lang)}")
    return code


def resolve(data: DataConfig, tokenizer) -> LanguageSetup:
    """The setup of a run in ``data``'s direction with ``tokenizer`` (the teacher's, or one trained here).

    Language codes come from ``data.source_lang_code``/``target_lang_code``, else are derived from the languages;
    a code, or a ``data.target_token``, the tokenizer does not know is a ConfigError naming the key.
    """
    name = type(tokenizer).__name__
    if data.target_token:
        vocab = tokenizer.get_vocab()
        if data.target_token not in vocab:
            tokens = getattr(tokenizer, "supported_language_codes", None) or \
                [t for t in vocab if t.startswith(">>") and t.endswith("<<")]
            hint = (f"use one of its target tokens, e.g. {', '.join(sorted(tokens)[:6])}" if tokens else
                    "it has no target-language tokens: leave data.target_token empty")
            raise ConfigError(f"data.target_token: '{data.target_token}' is not a token of the teacher's tokenizer "
                              f"({name}); {hint}")
    setup = {"source_prefix": data.source_prefix, "target_token": data.target_token}
    if code_style(tokenizer) is None:
        for key in ("source_lang_code", "target_lang_code"):
            if getattr(data, key):
                raise ConfigError(f"data.{key}: the teacher's tokenizer ({name}) has no language codes; leave it "
                                  "empty (a T5/mT5 teacher takes data.source_prefix, a multilingual opus-mt teacher "
                                  "data.target_token)")
        return LanguageSetup(**setup)
    codes = known_codes(tokenizer)
    src = _resolve_code(tokenizer, "source_lang_code", data.source_lang_code, data.source_lang, codes)
    tgt = _resolve_code(tokenizer, "target_lang_code", data.target_lang_code, data.target_lang, codes)
    return LanguageSetup(src_lang=src, tgt_lang=tgt, start_token=_code_token(tokenizer, tgt), **setup)


def setup_of(tokenizer) -> LanguageSetup:
    """The setup a tokenizer carries (see :meth:`LanguageSetup.apply`); an empty one for a tokenizer without."""
    saved = tokenizer.init_kwargs.get(CONFIG_KEY) or {}
    text = {"source_prefix": str(saved.get("source_prefix", "")), "target_token": str(saved.get("target_token", ""))}
    tgt = getattr(tokenizer, "tgt_lang", None) if code_style(tokenizer) else None
    if tgt is None:
        return LanguageSetup(**text)
    return LanguageSetup(src_lang=tokenizer.src_lang, tgt_lang=tgt, start_token=_code_token(tokenizer, tgt), **text)


def source_ids(tokenizer, sources: Sequence[str], **options) -> list[list[int]]:
    """Token ids of ``sources`` as the encoder reads them (the tokenizer's setup applied); ``options`` go to the
    tokenizer (e.g. ``truncation=True, max_length=...``)."""
    setup = setup_of(tokenizer)
    texts = [setup.source_text(s) for s in sources] if setup.source_prefix or setup.target_token else list(sources)
    return tokenizer(texts, **options)["input_ids"]
