"""The visual distillation monitor: show what the teacher and the student actually translate.

A falling loss can hide the failure users fear most: a student that prints the same few words for
every input. Every ``sample_frequency`` optimizer steps, :class:`DistillationMonitor` (a plain
``transformers.TrainerCallback``, so it works with any distillation method) translates a few fixed dev
sentences greedily with the student, puts them next to the teacher's cached translations and the
reference, and scores how *lazy* the student is on each:

    laziness = 0.6 * (1 - text_similarity(student, teacher)) + 0.4 * normalised_kl

* ``text_similarity`` is :class:`difflib.SequenceMatcher`'s ``ratio()`` on the two strings (characters,
  ``autojunk`` off so long sentences are not distorted), 1.0 for identical texts.
* ``normalised_kl = min(1, KL / log V)``, where ``KL`` is the mean per-token ``KL(teacher || student)``
  in nats at temperature 1, teacher-forced on the **teacher's own greedy translation** (see
  :func:`sample_kl`), and ``V`` the vocabulary size. ``log V`` is the KL from any teacher
  distribution to the uniform distribution plus the teacher's entropy, i.e. the KL of a student that
  knows nothing (a uniform guess) from a confident teacher. So 0 means "predicts exactly what the
  teacher predicts", 1 means "no better than a uniform guess" (a confidently wrong student can go past
  it; it is clipped). The scale is anchored to a meaningful baseline and has a linear response, unlike
  ``1 - exp(-KL)``, which saturates already at 2-3 nats and would paint most of training red.

Bands: below 0.30 green ("learning well"), below 0.60 yellow ("getting there"), else red ("lazy").

On a terminal the monitor prints ``rich`` panels; elsewhere (CI, a log file, ``monitor.quiet``) it
writes one plain line per sample and one per summary. Scalars (tags ``monitor/laziness``,
``monitor/text_similarity``, ``monitor/kl_normalised``, ...) and the texts go to TensorBoard when a
``log_dir`` is given. Everything shown is kept in :attr:`DistillationMonitor.history` (one record per
sample and panel), :attr:`~DistillationMonitor.epoch_summaries` and
:attr:`~DistillationMonitor.final_summary`, for a report to plot the laziness trend and the history of
one sample across epochs.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import re
import sys
import unicodedata
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from distilmt.config import MonitorConfig
from distilmt.losses import forward_kl

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------
# Scores
# ----------------------------------------------------------------------------------------------------

TEXT_WEIGHT = 0.6
KL_WEIGHT = 0.4
GREEN_BELOW = 0.30
YELLOW_BELOW = 0.60
TREND_EPSILON = 0.05  # a change in mean laziness smaller than this between first and last epoch is "flat"
LOW_LOSS = 1.5  # nats/token: a training loss below this counts as "low" for the comments


def text_similarity(a: str, b: str) -> float:
    """difflib ``SequenceMatcher(None, a, b, autojunk=False).ratio()`` on characters, in [0, 1].

    Two empty strings are identical (1.0). ``autojunk`` is off because its popularity heuristic
    treats frequent characters (spaces, vowels) of strings over 200 characters as junk.
    """
    if not a and not b:
        return 1.0
    return float(difflib.SequenceMatcher(None, a, b, autojunk=False).ratio())


def normalised_kl(kl_nats_per_token: float, vocab_size: int) -> float:
    """``KL / log(V)`` clipped to [0, 1]: 0 = the teacher's prediction, 1 = a uniform guess or worse.

    A NaN KL (a student that produced NaN logits) is as bad as it gets: 1.0.
    """
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be at least 2 to normalise a KL, got {vocab_size}")
    if kl_nats_per_token is None or math.isnan(kl_nats_per_token):
        return 1.0
    return float(min(1.0, max(0.0, kl_nats_per_token / math.log(vocab_size))))


def laziness(similarity: float, kl_norm: float | None) -> float:
    """``0.6 * (1 - similarity) + 0.4 * kl_norm``, in [0, 1].

    Without a KL (``kl_norm=None``: teacher and student do not share a vocabulary) the text term alone
    is used: ``1 - similarity``.
    """
    s = min(1.0, max(0.0, float(similarity)))
    if kl_norm is None:
        return 1.0 - s
    k = min(1.0, max(0.0, float(kl_norm)))
    return TEXT_WEIGHT * (1.0 - s) + KL_WEIGHT * k


_BAND_LABELS = {
    "en": {"green": "learning well", "yellow": "getting there", "red": "lazy"},
    "zh": {"green": "学习良好", "yellow": "正在进步", "red": "偷懒"},
}


def band(value: float, language: str = "en") -> tuple[str, str]:
    """(colour, label) of a laziness value: [0, 0.3) green, [0.3, 0.6) yellow, [0.6, 1] red."""
    colour = "green" if value < GREEN_BELOW else "yellow" if value < YELLOW_BELOW else "red"
    return colour, _BAND_LABELS[_lang(language)][colour]


_COMMENTS = {
    "en": {
        "diverged": "loss is not a number — training diverged",
        "excellent": "excellent — has mastered the teacher",
        "good": "good, most knowledge absorbed",
        "learning": "still learning — keep training",
        "topic": "not fluent on this topic yet",
        "lazy": "lazy — needs more work",
        "collapse": "lazy despite a low loss — check for the same output on every input",
    },
    "zh": {
        "diverged": "损失不是数值——训练已发散",
        "excellent": "优秀——已经掌握了老师的本领",
        "good": "良好，大部分知识已经吸收",
        "learning": "仍在学习中——继续训练",
        "topic": "对这个主题还不够流利",
        "lazy": "偷懒——还需要更多训练",
        "collapse": "损失很低却在偷懒——检查是否对每个输入都输出相同内容",
    },
}


def comment(laziness_value: float, loss: float | None, language: str = "en", low_loss: float = LOW_LOSS) -> str:
    """A short comment from the laziness and the current training loss (None when none was logged yet).

    Below 0.15 "excellent", below 0.30 "good". In the yellow band a low loss (< ``low_loss``) means the
    student fits its training data but not this sentence ("not fluent on this topic yet"); a high loss
    means it is still learning. In the red band a low loss is the alarming case: the loss goes down
    while the text stays far from the teacher, the signature of a collapsed student.
    """
    text = _COMMENTS[_lang(language)]
    if loss is not None and not math.isfinite(loss):
        return text["diverged"]
    low = loss is not None and loss < low_loss
    if laziness_value < 0.15:
        return text["excellent"]
    if laziness_value < GREEN_BELOW:
        return text["good"]
    if laziness_value < YELLOW_BELOW:
        return text["topic"] if low else text["learning"]
    return text["collapse"] if low else text["lazy"]


def repetition(text: str) -> float:
    """Share of repeated words: ``1 - distinct words / words`` (0 for fewer than 3 words)."""
    words = text.split()
    if len(words) < 3:
        return 0.0
    return 1.0 - len(set(words)) / len(words)


def _mean_pairwise_similarity(texts: list[str]) -> float:
    pairs = [(a, b) for i, a in enumerate(texts) for b in texts[i + 1:]]
    return sum(text_similarity(a, b) for a, b in pairs) / len(pairs)


def collapse_suspected(students: list[str], teachers: list[str]) -> bool:
    """True when the student's outputs look degenerate where the teacher's do not.

    Degenerate: empty everywhere; (nearly) the same text for different inputs (mean pairwise
    similarity of the student's outputs >= 0.8 and at least 0.3 above the teacher's); or mostly
    repeated words (> 0.5 on average and 0.25 above the teacher's).
    """
    if not students:
        return False
    if all(not s.strip() for s in students) and any(t.strip() for t in teachers):
        return True
    if len(students) >= 2 and len(teachers) == len(students):
        s_sim, t_sim = _mean_pairwise_similarity(students), _mean_pairwise_similarity(teachers)
        if s_sim >= 0.8 and s_sim >= t_sim + 0.3:
            return True
    rep_s = sum(map(repetition, students)) / len(students)
    rep_t = sum(map(repetition, teachers)) / max(len(teachers), 1)
    return rep_s > 0.5 and rep_s > rep_t + 0.25


def _lang(language: str) -> str:
    if language not in ("en", "zh"):
        raise ValueError(f"language '{language}' is not en or zh")
    return language


# ----------------------------------------------------------------------------------------------------
# Topics
# ----------------------------------------------------------------------------------------------------

OTHER_TOPIC = "other"

# Keywords for the built-in corpus (English / Hungarian Bible verses), lower case. A keyword of four or
# more characters matches any word that starts with it ("pray" -> "prayed", "király" -> "királyok", as
# Hungarian adds suffixes); a shorter one must match a whole word; one with a space matches a phrase.
BUILTIN_TOPICS: dict[str, list[str]] = {
    "family & genealogy": [
        "son", "sons", "daughter", "father", "mother", "wife", "husband", "brother", "sister", "child",
        "born", "begot", "became the father", "firstborn", "descendant", "generation", "genealogy",
        "family", "household", "marri", "widow", "grandson",
        "fia", "fiai", "fiát", "fiú", "leány", "lánya", "apja", "anyja", "anya", "atyja", "feleség",
        "férj", "testvér", "fivér", "nővér", "gyermek", "gyerek", "született", "nemzett", "nemzetség",
        "elsőszülött", "utód", "család", "házasság", "özvegy", "unoká",
    ],
    "worship & prayer": [
        "pray", "praise", "worship", "bless", "thank", "sing", "song", "hymn", "hallelujah", "glory",
        "glorif", "holy", "temple", "sanctuary", "psalm", "rejoice", "exalt",
        "imád", "dicsér", "dicsőít", "dicsőség", "áldott", "áldás", "áldja", "áldjá", "hálát", "hálaad",
        "ének", "zsoltár", "szent", "templom", "leborul", "magasztal", "örvend", "ujjong",
    ],
    "war & kings": [
        "king", "reign", "throne", "army", "armies", "battle", "war", "wars", "warrior", "sword", "spear",
        "shield", "fought", "fight", "enemy", "enemies", "soldier", "captain", "commander", "chariot",
        "siege", "besieg", "conquer", "defeat", "slew", "struck", "attack", "weapon",
        "király", "uralkod", "trón", "sereg", "harc", "háború", "hadsereg", "had", "vitéz", "kard",
        "lándzsa", "pajzs", "ellenség", "ellenfél", "katona", "vezér", "parancsnok", "szekér", "ostrom",
        "legyőz", "megver", "megöl", "fegyver",
    ],
    "law & sacrifice": [
        "law", "laws", "command", "statute", "ordinance", "decree", "offer", "sacrific", "altar", "priest",
        "burnt", "incense", "unclean", "clean", "atonement", "lamb", "bull", "goat", "ram", "blood",
        "sabbath", "covenant", "tabernacle", "tithe",
        "törvény", "parancsolat", "rendelkezés", "rendelet", "áldoz", "égőáldozat", "vétekáldozat",
        "oltár", "pap", "papok", "papot", "papj", "főpap", "tömjén", "tiszta", "tisztátalan", "tisztul",
        "tisztít", "engesztel", "bárány", "bika", "kecske", "kos", "vér", "vére", "vérét", "szombat",
        "szövetség", "sátor", "tized",
    ],
    "prophecy": [
        "prophe", "vision", "oracle", "woe", "thus says", "declare", "the day of", "dream", "seer",
        "foretold", "repent",
        "prófét", "prófécia", "látomás", "látnok", "jövendöl", "ezt mondja az úr", "így szól", "jaj",
        "kijelent", "álom", "álmot", "megtér", "az úr napja",
    ],
    "travel & journeys": [
        "journey", "travel", "road", "ship", "boat", "sail", "voyage", "sea", "wilderness", "desert",
        "camp", "encamp", "depart", "arrive", "crossed", "set out", "passed through",
        "utaz", "útra", "útján", "úton", "hajó", "tenger", "puszta", "tábor", "elindul", "megérkez",
        "átkel", "vándor", "kivonul",
    ],
    "nature & farming": [
        "field", "vine", "harvest", "seed", "sow", "sowed", "sower", "reap", "tree", "fruit", "grain",
        "wheat", "barley", "flock", "sheep", "cattle", "herd", "shepherd", "rain", "olive", "oxen", "ox",
        "plant", "garden", "grass", "flower", "soil", "fig", "thorn", "river", "mountain",
        "mező", "szántóföld", "szőlő", "aratás", "arat", "learat", "mag", "vet", "vetés", "magvet",
        "fa", "fák", "fát", "gyümölcs", "gabona", "búza", "árpa", "nyáj", "juh", "juho", "marha", "csorda",
        "pásztor", "eső", "olajfa", "ökör", "ökrö", "ültet", "kert", "fű", "virág", "hegy", "folyó",
        "füge", "tövis",
    ],
    "teaching & parables": [
        "teach", "taught", "disciple", "parable", "rabbi", "wisdom", "wise", "fool", "understand",
        "instruct", "knowledge", "proverb", "listen", "learn", "most certainly i tell you",
        "tanít", "tanul", "példázat", "példabeszéd", "mester", "bölcs", "bolond", "ostoba", "megért",
        "értelem", "értelm", "tudás", "ismeret", "hallgat", "bizony mondom",
    ],
    "faith & grace": [
        "faith", "believ", "grace", "mercy", "merciful", "salvation", "save", "saved", "savior", "gospel",
        "love", "spirit", "christ", "righteous", "hope", "forgiv", "sin", "sins", "eternal",
        "resurrection", "assembly", "apostle",
        "hit", "hite", "hitben", "higgy", "hívő", "kegyelem", "kegyelm", "irgalom", "irgalm", "üdvösség",
        "üdvözít", "megment", "evangéli", "szeret", "lélek", "lelk", "krisztus", "igaz", "remény",
        "megbocsát", "bűn", "bűnö", "bűnt", "bűné", "örök élet", "feltámad", "gyülekezet", "apostol",
    ],
}

_TOPIC_NAMES_ZH = {
    "family & genealogy": "家庭与家谱", "worship & prayer": "敬拜与祷告", "war & kings": "战争与君王",
    "law & sacrifice": "律法与献祭", "prophecy": "预言", "travel & journeys": "旅途与行程",
    "nature & farming": "自然与农耕", "teaching & parables": "教导与比喻", "faith & grace": "信心与恩典",
    OTHER_TOPIC: "其他",
}

_WORD = re.compile(r"\w+")


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def merge_topics(extra: dict[str, list[str]] | None = None, builtin: bool = True) -> dict[str, list[str]]:
    """The user's topics first (they win ties), then the built-in ones; a shared name pools keywords."""
    merged: dict[str, list[str]] = {name: list(words) for name, words in (extra or {}).items()}
    if builtin:
        for name, words in BUILTIN_TOPICS.items():
            merged.setdefault(name, [])
            merged[name] += [w for w in words if w not in merged[name]]
    return merged


def classify_topic(text: str, topics: dict[str, list[str]] | None = None) -> str:
    """The topic whose keywords occur most often in ``text`` (ties: the first listed), or ``"other"``.

    ``topics`` maps a topic name to keywords (default: :data:`BUILTIN_TOPICS`). Matching is
    case-insensitive; a keyword of 4+ characters matches words it starts, a shorter one whole words,
    one with a space a phrase.
    """
    topics = BUILTIN_TOPICS if topics is None else topics
    words = _WORD.findall(_fold(text))
    joined = " " + " ".join(words) + " "
    best, best_hits = OTHER_TOPIC, 0
    for name, keywords in topics.items():
        hits = 0
        for keyword in keywords:
            key = " ".join(_WORD.findall(_fold(keyword)))
            if not key:
                continue
            if " " in key:
                hits += joined.count(" " + key)
            elif len(key) >= 4:
                hits += sum(w.startswith(key) for w in words)
            else:
                hits += sum(w == key for w in words)
        if hits > best_hits:
            best, best_hits = name, hits
    return best


def topic_name(topic: str, language: str = "en") -> str:
    """The display name of a topic (built-in topics are translated for ``zh``)."""
    return _TOPIC_NAMES_ZH.get(topic, topic) if language == "zh" else topic


# ----------------------------------------------------------------------------------------------------
# Text helpers
# ----------------------------------------------------------------------------------------------------


EMPTY = "(empty)"


def shorten(text: str, max_chars: int) -> str:
    """One line, at most ``max_chars`` characters, an ellipsis marking a cut."""
    text = " ".join(text.split())
    return text if len(text) <= max_chars else text[: max_chars - 1].rstrip() + "…"


def shown(text: str, max_chars: int) -> str:
    """:func:`shorten`, with an empty translation shown as ``(empty)`` rather than a blank."""
    return shorten(text, max_chars) or EMPTY


def word_diff(student: str, teacher: str) -> list[tuple[str, str]]:
    """Word-level edit from the student's text to the teacher's: ``(op, words)`` with op in
    ``equal`` / ``delete`` (only the student has them) / ``insert`` (only the teacher has them)."""
    s_words, t_words = student.split(), teacher.split()
    out: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, s_words, t_words, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(("equal", " ".join(s_words[i1:i2])))
            continue
        if op in ("delete", "replace"):
            out.append(("delete", " ".join(s_words[i1:i2])))
        if op in ("insert", "replace"):
            out.append(("insert", " ".join(t_words[j1:j2])))
    return out


def plain_diff(student: str, teacher: str) -> str:
    """git word-diff style: ``[-student only-]{+teacher only+}``."""
    parts = []
    for op, words in word_diff(student, teacher):
        parts.append(words if op == "equal" else f"[-{words}-]" if op == "delete" else f"{{+{words}+}}")
    return " ".join(parts)


# ----------------------------------------------------------------------------------------------------
# Model helpers
# ----------------------------------------------------------------------------------------------------

MAX_SOURCE_TOKENS = 256


def _device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without parameters
        return torch.device("cpu")


@contextmanager
def _evaluating(model):
    """Eval mode (no dropout) and no autograd for the block; the previous mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _decoder_start(model) -> int:
    for source in (model.config, getattr(model, "generation_config", None)):
        value = getattr(source, "decoder_start_token_id", None) if source is not None else None
        if value is not None:
            return int(value)
    pad = getattr(model.config, "pad_token_id", None)
    if pad is None:
        raise ValueError("the model has neither decoder_start_token_id nor pad_token_id in its config")
    return int(pad)


def _encode(tokenizer, sources: list[str], device) -> dict[str, torch.Tensor]:
    enc = tokenizer(sources, return_tensors="pt", padding=True, truncation=True, max_length=MAX_SOURCE_TOKENS)
    return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}


def greedy_translate(model, tokenizer, sources: list[str], max_new_tokens: int = 128,
                     generate_kwargs: dict | None = None) -> list[str]:
    """Greedy translations of ``sources`` in one batch, decoded to text, in eval mode without grad.

    The output length is capped at ``2 * source tokens + 10`` (and ``max_new_tokens``), so a student
    that never emits ``</s>`` costs a bounded time.
    """
    with _evaluating(model):
        enc = _encode(tokenizer, sources, _device(model))
        cap = max(1, min(max_new_tokens, 2 * enc["input_ids"].shape[1] + 10))
        kwargs = {"do_sample": False, "num_beams": 1, "max_new_tokens": cap, "use_cache": True}
        kwargs.update(generate_kwargs or {})
        out = model.generate(**enc, **kwargs)
    return [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)]


def batch_kl(teacher, student, tokenizer, sources: list[str], targets: list[str]) -> tuple[list[float], int]:
    """Mean per-token ``KL(teacher || student)`` at T=1 for each pair, teacher-forced on ``targets``,
    and the vocabulary size the KL was taken over.

    Both models read the same source and target token ids (each with its own decoder start token); the
    logits are compared in fp32 over the shared vocabulary (the smaller of the two logit widths, for
    models whose embeddings are padded to a multiple), with padded target positions ignored.
    """
    labels = tokenizer(text_target=targets, return_tensors="pt", padding=True, truncation=True,
                       max_length=MAX_SOURCE_TOKENS)
    ids, mask = labels["input_ids"], labels["attention_mask"].bool()
    logits = []
    for model in (teacher, student):
        device = _device(model)
        with _evaluating(model):
            enc = _encode(tokenizer, sources, device)
            start = torch.full((ids.shape[0], 1), _decoder_start(model), dtype=ids.dtype)
            decoder_input_ids = torch.cat([start, ids[:, :-1]], dim=1).to(device)
            out = model(**enc, decoder_input_ids=decoder_input_ids, use_cache=False)
        logits.append(out.logits.float())
    device = logits[1].device
    vocab = min(logits[0].shape[-1], logits[1].shape[-1])
    t_logits, s_logits = logits[0][..., :vocab].to(device), logits[1][..., :vocab]
    mask = mask.to(device)
    kls = []
    for row in range(ids.shape[0]):
        total, count = forward_kl(s_logits[row : row + 1], t_logits[row : row + 1], mask[row : row + 1])
        kls.append(float(total / count.clamp(min=1)))
    return kls, int(vocab)


def sample_kl(teacher, student, tokenizer, source: str, target_text: str) -> float:
    """Mean per-token ``KL(teacher || student)`` in nats at T=1 on one sentence pair, teacher-forced
    on ``target_text`` (the monitor passes the teacher's own greedy translation: the question is how
    far the student is from imitating the teacher on what the teacher would say; it also needs no
    reference). Computed under ``torch.no_grad`` in eval mode; both models' modes are restored."""
    return batch_kl(teacher, student, tokenizer, [source], [target_text])[0][0]


def select_samples(pairs: list[tuple[str, str]], n: int, min_words: int = 6,
                   max_words: int = 30) -> list[tuple[str, str]]:
    """``n`` (source, reference) pairs spread evenly over ``pairs``, preferring mid-length sources."""
    fitting = [p for p in pairs if min_words <= len(p[0].split()) <= max_words] or list(pairs)
    if len(fitting) <= n:
        return list(fitting)
    step = len(fitting) / n
    return [fitting[int(i * step)] for i in range(n)]


# ----------------------------------------------------------------------------------------------------
# The callback
# ----------------------------------------------------------------------------------------------------

_LABELS = {
    "en": {"title": "Distillation monitor", "step": "step", "epoch": "epoch", "loss": "loss", "sample": "sample",
           "topic": "topic", "source": "source", "teacher": "teacher", "student": "student",
           "reference": "reference", "diff": "diff", "laziness": "laziness", "similarity": "similarity",
           "comment": "comment", "summary": "summary", "samples_shown": "samples shown",
           "mean_loss": "mean loss", "mean_laziness": "mean laziness", "topics": "topics",
           "final": "final", "overall": "overall laziness", "first_last": "first → last epoch",
           "trend": "trend", "advice": "advice", "collapsed": "collapse suspected"},
    "zh": {"title": "蒸馏监控", "step": "步数", "epoch": "轮次", "loss": "损失", "sample": "样本",
           "topic": "主题", "source": "原文", "teacher": "教师", "student": "学生", "reference": "参考译文",
           "diff": "差异", "laziness": "偷懒度", "similarity": "相似度", "comment": "评语", "summary": "小结",
           "samples_shown": "展示样本数", "mean_loss": "平均损失", "mean_laziness": "平均偷懒度",
           "topics": "主题分布", "final": "最终总结", "overall": "总体偷懒度", "first_last": "首轮 → 末轮",
           "trend": "趋势", "advice": "建议", "collapsed": "疑似坍缩"},
}

_TRENDS = {"en": {"improving": "improving", "flat": "flat", "worse": "worse", "unknown": "unknown (too few panels)"},
           "zh": {"improving": "改善", "flat": "持平", "worse": "变差", "unknown": "未知（面板太少）"}}

_ADVICE = {
    "en": {
        "none": "no sample was shown: lower monitor.sample_frequency or train longer",
        "collapsed": "student collapsed: lower the temperature or raise the hard-label weight",
        "well": "distillation worked well, consider a smaller student",
        "improving": "still improving: train for more epochs",
        "plateau": "plateaued half-way: try a larger student, a higher KD weight, "
                   "or initialising the student from the teacher",
        "worse": "getting worse: lower the learning rate and check for overfitting",
        "far_improving": "far from the teacher but improving: train much longer",
        "far_worse": "getting lazier: lower the learning rate and check the temperature and loss weights",
        "far": "the student copies little from the teacher: train longer, use a larger student, "
               "or raise the KD weight",
    },
    "zh": {
        "none": "没有展示任何样本：请调低 monitor.sample_frequency 或延长训练",
        "collapsed": "学生模型已坍缩：请降低温度或提高硬标签权重",
        "well": "蒸馏效果很好，可以考虑更小的学生模型",
        "improving": "仍在进步：请训练更多轮次",
        "plateau": "进展停滞在一半：尝试更大的学生模型、更高的蒸馏权重，或用教师初始化学生",
        "worse": "越来越差：请降低学习率并检查是否过拟合",
        "far_improving": "离教师还很远但在进步：请训练更久",
        "far_worse": "越来越偷懒：请降低学习率并检查温度和损失权重",
        "far": "学生从教师那里学到的很少：请延长训练、使用更大的学生模型或提高蒸馏权重",
    },
}


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def trend_of(first: float | None, last: float | None, epsilon: float = TREND_EPSILON) -> str:
    """improving / flat / worse from the first to the last mean laziness (lower is better)."""
    if first is None or last is None:
        return "unknown"
    if last < first - epsilon:
        return "improving"
    if last > first + epsilon:
        return "worse"
    return "flat"


def advice_key(samples_shown: int, final_laziness: float | None, trend: str, collapsed: bool) -> str:
    """Which advice the final box gives (a key of the advice table), from the numbers alone."""
    if samples_shown == 0 or final_laziness is None:
        return "none"
    if collapsed:
        return "collapsed"
    if final_laziness < GREEN_BELOW:
        return "well"
    if final_laziness < YELLOW_BELOW:
        return {"improving": "improving", "worse": "worse"}.get(trend, "plateau")
    return {"improving": "far_improving", "worse": "far_worse"}.get(trend, "far")


class DistillationMonitor(TrainerCallback):
    """Show the teacher's and the student's translations of a few fixed samples while training.

    Args:
        teacher: a frozen Hugging Face seq2seq model; its greedy translations of ``samples`` are
            computed once and cached.
        tokenizer: the tokenizer shared by teacher and student.
        samples: (source, reference) pairs; the first ``config.num_samples`` are shown.
        config: a :class:`~distilmt.config.MonitorConfig`.
        log_dir: a TensorBoard directory for scalars and texts (none when ``None``).
        console: a ``rich`` console (default: one on stderr). Panels are drawn when it is a terminal and
            ``config.quiet`` is off; otherwise plain lines are written to ``stream``.
        stream: where plain lines go (default: the console's file when a console is given, else stderr).
        max_new_tokens: the longest translation generated (the student's is also held to 1.5x the
            teacher's longest translation + 10 tokens, and both to 2x the source + 10).
        generate_kwargs: extra ``generate()`` arguments for both models (e.g. ``forced_bos_token_id``).
        low_loss: the training loss below which the comments consider the loss "low".

    The student is the ``model`` the Trainer passes to callbacks. Translations are computed on every
    process (models sharded across processes need them all to take part); only the main process prints
    and writes TensorBoard.
    """

    def __init__(self, teacher, tokenizer, samples: list[tuple[str, str]], config: MonitorConfig,
                 log_dir: str | None = None, console=None, stream=None, max_new_tokens: int = 128,
                 generate_kwargs: dict | None = None, low_loss: float = LOW_LOSS):
        from rich.console import Console

        if not samples and config.enabled:
            raise ValueError("the distillation monitor needs at least one (source, reference) dev sample to show: "
                             "give a dev set, or set monitor.enabled=false")
        self.teacher = teacher
        self.tokenizer = tokenizer
        self.config = config
        self.samples = [(str(s), str(r)) for s, r in samples[: config.num_samples]]
        self.log_dir = log_dir
        self.console = console if console is not None else Console(stderr=True)
        self.stream = stream if stream is not None else (console.file if console is not None else sys.stderr)
        self.max_new_tokens = max_new_tokens
        self.generate_kwargs = dict(generate_kwargs or {})
        self.low_loss = low_loss
        self.language = config.language
        self.topics = merge_topics(config.topics)
        self.sample_topics = [classify_topic(f"{s} {r}", self.topics) for s, r in self.samples]

        self.history: list[dict[str, Any]] = []
        self.panels: list[dict[str, Any]] = []
        self.epoch_summaries: list[dict[str, Any]] = []
        self.final_summary: dict[str, Any] | None = None

        self._teacher_texts: list[str] | None = None
        self._student_cap = max_new_tokens
        self._kl_warned = False
        self._writer = None
        self._last_step = -1
        self._epoch_history_start = 0
        self._epoch_log_start = 0

    # -- properties -----------------------------------------------------------------------------

    @property
    def rich_output(self) -> bool:
        """Whether panels are drawn (a terminal or a notebook, and not quiet) rather than plain lines."""
        return bool(self.console.is_terminal or self.console.is_jupyter) and not self.config.quiet

    @property
    def teacher_translations(self) -> list[str]:
        """The teacher's greedy translations of the samples, computed once."""
        if self._teacher_texts is None:
            self._teacher_texts = greedy_translate(self.teacher, self.tokenizer, [s for s, _ in self.samples],
                                                   self.max_new_tokens, self.generate_kwargs)
            # The student may write up to 1.5x the teacher's longest translation (+10 tokens): enough to
            # see any real attempt, and a looping student costs no more than that.
            longest = max(len(self.tokenizer(text_target=t)["input_ids"]) for t in self._teacher_texts)
            self._student_cap = min(self.max_new_tokens, int(1.5 * longest) + 10)
        return self._teacher_texts

    # -- Trainer events -------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, **kwargs):
        if self.config.enabled:
            self.teacher_translations  # noqa: B018  (compute the cache before the first step)

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._epoch_history_start = len(self.history)
        self._epoch_log_start = len(state.log_history)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if (not self.config.enabled or model is None or step <= 0 or step == self._last_step
                or step % self.config.sample_frequency):
            return
        self._last_step = step
        records = self.observe(model, step=step, epoch=state.epoch, loss=_latest_loss(state.log_history))
        if state.is_world_process_zero:
            self._show_panel(records)
            self._log_tensorboard(records, step)

    def on_epoch_end(self, args, state, control, **kwargs):
        if not self.config.enabled:
            return
        losses = [e["loss"] for e in state.log_history[self._epoch_log_start:] if "loss" in e]
        summary = self._summarise(self.history[self._epoch_history_start:], len(self.epoch_summaries) + 1,
                                  state.global_step, losses)
        self.epoch_summaries.append(summary)
        self._epoch_history_start = len(self.history)
        self._epoch_log_start = len(state.log_history)
        if state.is_world_process_zero:
            self._show_epoch(summary)
            if self._tb() is not None and summary["mean_laziness"] is not None:
                self._writer.add_scalar("monitor/epoch_mean_laziness", summary["mean_laziness"], state.global_step)
                self._writer.flush()

    def on_train_end(self, args, state, control, **kwargs):
        if not self.config.enabled:
            return
        rest = self.history[self._epoch_history_start:]
        if rest:  # panels after the last epoch end (training stopped mid-epoch without an epoch end)
            losses = [e["loss"] for e in state.log_history[self._epoch_log_start:] if "loss" in e]
            self.epoch_summaries.append(self._summarise(rest, len(self.epoch_summaries) + 1, state.global_step, losses))
            self._epoch_history_start = len(self.history)
        self.final_summary = self._final()
        if state.is_world_process_zero:
            self._show_final(self.final_summary)
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None

    # -- measuring ------------------------------------------------------------------------------

    def observe(self, student, step: int = 0, epoch: float | None = None, loss: float | None = None) -> list[dict]:
        """Translate the samples with ``student``, score them, append the records to :attr:`history`."""
        sources = [s for s, _ in self.samples]
        teachers = self.teacher_translations
        students = greedy_translate(student, self.tokenizer, sources, self._student_cap, self.generate_kwargs)
        try:
            kls, vocab = batch_kl(self.teacher, student, self.tokenizer, sources, teachers)
        except (TypeError, ValueError) as exc:  # a model that takes no decoder_input_ids: text term only
            if not self._kl_warned:
                logger.warning("distillation monitor: no KL between teacher and student (%s); laziness uses "
                               "the text similarity alone", exc)
                self._kl_warned = True
            kls, vocab = [None] * len(sources), 0
        records = []
        for i, ((source, reference), teacher_text, student_text, kl) in enumerate(
                zip(self.samples, teachers, students, kls)):
            similarity = text_similarity(student_text, teacher_text)
            kl_norm = normalised_kl(kl, vocab) if kl is not None else None
            value = laziness(similarity, kl_norm)
            colour, label = band(value, self.language)
            records.append({
                "step": int(step), "epoch": None if epoch is None else float(epoch), "sample": i,
                "source": source, "reference": reference, "teacher": teacher_text, "student": student_text,
                "similarity": similarity, "kl": kl, "kl_norm": kl_norm, "laziness": value,
                "colour": colour, "band": label, "topic": self.sample_topics[i],
                "comment": comment(value, loss, self.language, self.low_loss), "loss": loss,
                "repetition": repetition(student_text),
            })
        self.history.extend(records)
        self.panels.append({
            "step": int(step), "epoch": None if epoch is None else float(epoch), "loss": loss,
            "mean_laziness": _mean(r["laziness"] for r in records),
            "collapsed": collapse_suspected(students, teachers),
        })
        return records

    # -- statistics -----------------------------------------------------------------------------

    def _summarise(self, records: list[dict], epoch: int, step: int, losses: list[float]) -> dict:
        topics = Counter(r["topic"] for r in records)
        return {
            "epoch": epoch, "step": int(step), "samples_shown": len(records),
            "mean_loss": _mean(losses) if losses else _mean(r["loss"] for r in records),
            "mean_laziness": _mean(r["laziness"] for r in records),
            "mean_similarity": _mean(r["similarity"] for r in records),
            "mean_kl_norm": _mean(r["kl_norm"] for r in records),
            "topics": dict(topics), "top_topics": topics.most_common(5),
        }

    def _trend(self) -> tuple[float | None, float | None, str]:
        epochs = [s["mean_laziness"] for s in self.epoch_summaries if s["mean_laziness"] is not None]
        if len(epochs) >= 2:
            first, last = epochs[0], epochs[-1]
        else:  # one epoch (or none summarised yet): first and last panel
            panels = [p["mean_laziness"] for p in self.panels]
            if len(panels) < 2:
                return (panels[0] if panels else None), (panels[0] if panels else None), "unknown"
            first, last = panels[0], panels[-1]
        return first, last, trend_of(first, last)

    def _final(self) -> dict:
        first, last, trend = self._trend()
        collapsed = bool(self.panels and self.panels[-1]["collapsed"])
        key = advice_key(len(self.history), last, trend, collapsed)
        return {
            "samples_shown": len(self.history), "panels": len(self.panels),
            "overall_laziness": _mean(r["laziness"] for r in self.history),
            "first_laziness": first, "last_laziness": last, "trend": trend,
            "collapsed": collapsed, "advice_key": key, "advice": _ADVICE[self.language][key],
            "topics": dict(Counter(r["topic"] for r in self.history)),
        }

    def stats(self) -> dict:
        """Everything measured so far, JSON-serialisable: totals, trend, per-epoch and per-sample series."""
        final = self.final_summary or self._final()
        return {
            **final,
            "mean_similarity": _mean(r["similarity"] for r in self.history),
            "mean_kl_norm": _mean(r["kl_norm"] for r in self.history),
            "laziness_by_step": [(p["step"], p["mean_laziness"]) for p in self.panels],
            "laziness_by_sample": {i: [(r["step"], r["laziness"]) for r in self.sample_history(i)]
                                   for i in range(len(self.samples))},
            "epoch_summaries": list(self.epoch_summaries),
            "sample_topics": list(self.sample_topics),
        }

    def sample_history(self, index: int) -> list[dict]:
        """The records of one sample, in order: its panel history across steps and epochs."""
        return [r for r in self.history if r["sample"] == index]

    def save(self, path: str | Path) -> None:
        """Write stats, history, panels and summaries as JSON (for the report)."""
        payload = {"stats": self.stats(), "history": self.history, "panels": self.panels,
                   "final_summary": self.final_summary}
        Path(path).write_text(json.dumps(payload, ensure_ascii=False, indent=1), encoding="utf-8")

    # -- output ---------------------------------------------------------------------------------

    def _label(self, key: str) -> str:
        return _LABELS[self.language][key]

    def _plain(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def _bar(self, value: float, width: int = 20):
        from rich.text import Text

        colour, label = band(value, self.language)
        filled = int(round(min(1.0, max(0.0, value)) * width))
        return Text.assemble(("█" * filled, colour), ("░" * (width - filled), "dim"), f" {value:4.0%}  ",
                             (label, colour))

    def _diff_text(self, student: str, teacher: str):
        from rich.text import Text

        text = Text()
        for op, words in word_diff(student, teacher):
            if text:
                text.append(" ")
            text.append(words, style={"equal": "", "delete": "red strike", "insert": "green underline"}[op])
        text.truncate(self.config.max_text_length * 2, overflow="ellipsis")
        return text

    def _show_panel(self, records: list[dict]) -> None:
        first = records[0]
        loss = first["loss"]
        if not self.rich_output:
            for r in records:
                self._plain(self._plain_sample(r))
            return
        from rich.console import Group
        from rich.panel import Panel
        from rich.rule import Rule
        from rich.table import Table
        from rich.text import Text

        n, cut = len(records), self.config.max_text_length
        parts = []
        for r in records:
            if parts:
                parts.append(Rule(style="dim"))
            grid = Table.grid(padding=(0, 2))
            grid.add_column(style="bold", no_wrap=True)
            grid.add_column(overflow="fold")
            grid.add_row(f"{self._label('sample')} {r['sample'] + 1}/{n}",
                         Text(f"{self._label('topic')}: {topic_name(r['topic'], self.language)}", style="cyan"))
            grid.add_row(self._label("source"), Text(shown(r["source"], cut)))
            grid.add_row(self._label("teacher"), Text(shown(r["teacher"], cut)))
            grid.add_row(self._label("student"), Text(shown(r["student"], cut), style="bold"))
            grid.add_row(self._label("reference"), Text(shown(r["reference"], cut), style="dim"))
            if self.config.show_diff:
                grid.add_row(self._label("diff"), self._diff_text(r["student"], r["teacher"]))
            grid.add_row(self._label("laziness"), self._bar(r["laziness"]))
            kl = "n/a" if r["kl"] is None else f"{r['kl']:.3f} nats/token, normalised {r['kl_norm']:.2f}"
            grid.add_row("", Text(f"{self._label('similarity')} {r['similarity']:.2f} · KL {kl}", style="dim"))
            grid.add_row(self._label("comment"), Text(r["comment"], style=r["colour"]))
            parts.append(grid)
        epoch = "" if first["epoch"] is None else f" · {self._label('epoch')} {first['epoch']:.2f}"
        loss_text = "" if loss is None else f" · {self._label('loss')} {loss:.4f}"
        mean_colour, _ = band(_mean(r["laziness"] for r in records))
        title = f"{self._label('title')} · {self._label('step')} {first['step']}{epoch}{loss_text}"
        self.console.print(Panel(Group(*parts), title=title, title_align="left", border_style=mean_colour))

    def _plain_sample(self, r: dict) -> str:
        cut = self.config.max_text_length
        kl = "n/a" if r["kl"] is None else f"{r['kl']:.3f}"
        kl_norm = "n/a" if r["kl_norm"] is None else f"{r['kl_norm']:.3f}"
        epoch = "n/a" if r["epoch"] is None else f"{r['epoch']:.2f}"
        fields = [
            f"[monitor] step={r['step']} epoch={epoch} sample={r['sample'] + 1}/{len(self.samples)}",
            f"topic={r['topic']!r} laziness={r['laziness']:.3f} band={r['colour']} similarity={r['similarity']:.3f}",
            f"kl={kl} kl_norm={kl_norm} loss={_fmt(r['loss'], 4)}",
            f"| source: {shown(r['source'], cut)} | teacher: {shown(r['teacher'], cut)}",
            f"| student: {shown(r['student'], cut)} | reference: {shown(r['reference'], cut)}",
        ]
        if self.config.show_diff:
            fields.append(f"| diff: {shorten(plain_diff(r['student'], r['teacher']), 2 * cut)}")
        fields.append(f"| comment: {r['comment']}")
        return " ".join(fields)

    def _topics_text(self, pairs: list[tuple[str, int]]) -> str:
        return ", ".join(f"{topic_name(t, self.language)} {c}" for t, c in pairs) or "n/a"

    def _show_epoch(self, s: dict) -> None:
        line = (f"[monitor] epoch {s['epoch']} summary: step={s['step']} samples_shown={s['samples_shown']} "
                f"mean_loss={_fmt(s['mean_loss'], 4)} mean_laziness={_fmt(s['mean_laziness'])} "
                f"topics: {self._topics_text(s['top_topics'])}")
        if not self.rich_output:
            self._plain(line)
            return
        logger.info(line)  # the box is for the terminal; the run's log file keeps the summary too
        from rich.panel import Panel
        from rich.table import Table

        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column()
        grid.add_row(self._label("samples_shown"), str(s["samples_shown"]))
        grid.add_row(self._label("mean_loss"), _fmt(s["mean_loss"], 4))
        grid.add_row(self._label("mean_laziness"),
                     "n/a" if s["mean_laziness"] is None else self._bar(s["mean_laziness"]))
        grid.add_row(self._label("topics"), self._topics_text(s["top_topics"]))
        title = f"{self._label('epoch')} {s['epoch']} {self._label('summary')} · {self._label('step')} {s['step']}"
        colour = "blue" if s["mean_laziness"] is None else band(s["mean_laziness"])[0]
        self.console.print(Panel(grid, title=title, title_align="left", border_style=colour))

    def _show_final(self, f: dict) -> None:
        trend = _TRENDS[self.language][f["trend"]]
        line = (f"[monitor] final: samples_shown={f['samples_shown']} panels={f['panels']} "
                f"overall_laziness={_fmt(f['overall_laziness'])} first={_fmt(f['first_laziness'])} "
                f"last={_fmt(f['last_laziness'])} trend={f['trend']} collapsed={f['collapsed']} "
                f"advice: {f['advice']}")
        if not self.rich_output:
            self._plain(line)
            return
        logger.info(line)
        from rich.panel import Panel
        from rich.table import Table

        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column()
        grid.add_row(self._label("samples_shown"), str(f["samples_shown"]))
        grid.add_row(self._label("overall"),
                     "n/a" if f["overall_laziness"] is None else self._bar(f["overall_laziness"]))
        grid.add_row(self._label("first_last"), f"{_fmt(f['first_laziness'])} → {_fmt(f['last_laziness'])}")
        grid.add_row(self._label("trend"), trend)
        if f["collapsed"]:
            grid.add_row(self._label("collapsed"), "!")
        grid.add_row(self._label("advice"), f["advice"])
        title = f"{self._label('title')} · {self._label('final')}"
        colour = "blue" if f["last_laziness"] is None else band(f["last_laziness"])[0]
        self.console.print(Panel(grid, title=title, title_align="left", border_style=colour))

    # -- TensorBoard ----------------------------------------------------------------------------

    def _tb(self):
        if self._writer is None and self.log_dir:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(self.log_dir)
        return self._writer

    def _log_tensorboard(self, records: list[dict], step: int) -> None:
        writer = self._tb()
        if writer is None:
            return
        writer.add_scalar("monitor/laziness", _mean(r["laziness"] for r in records), step)
        writer.add_scalar("monitor/text_similarity", _mean(r["similarity"] for r in records), step)
        kl_norm = _mean(r["kl_norm"] for r in records)
        if kl_norm is not None:
            writer.add_scalar("monitor/kl_normalised", kl_norm, step)
            writer.add_scalar("monitor/kl", _mean(r["kl"] for r in records), step)
        for r in records:
            i = r["sample"]
            writer.add_scalar(f"monitor/sample_{i}/laziness", r["laziness"], step)
            writer.add_scalar(f"monitor/sample_{i}/text_similarity", r["similarity"], step)
            if r["kl_norm"] is not None:
                writer.add_scalar(f"monitor/sample_{i}/kl_normalised", r["kl_norm"], step)
            writer.add_text(f"monitor/sample_{i}", _markdown(r), step)
        writer.flush()


def _latest_loss(log_history: list[dict]) -> float | None:
    for entry in reversed(log_history):
        if "loss" in entry:
            return float(entry["loss"])
    return None


def _markdown(r: dict) -> str:
    kl = "n/a" if r["kl"] is None else f"{r['kl']:.3f} nats/token (normalised {r['kl_norm']:.3f})"
    rows = [("topic", r["topic"]), ("source", r["source"]), ("teacher", r["teacher"]), ("student", r["student"]),
            ("reference", r["reference"]),
            ("laziness", f"{r['laziness']:.3f} ({r['colour']}: {r['band']})"),
            ("similarity", f"{r['similarity']:.3f}"), ("KL", kl), ("comment", r["comment"])]
    return "  \n".join(f"**{k}:** {str(v).replace('|', '/')}" for k, v in rows)
