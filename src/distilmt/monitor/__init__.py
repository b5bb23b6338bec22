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

The package, in layers (each imports only those before it):

* :mod:`.generation` - greedy translation of a batch in eval mode (to be replaced by a shared module);
* :mod:`.scores` - the numbers: similarity, normalised KL, laziness, collapse, trend, sample choice;
* :mod:`.topics` - the topic keyword tables and :func:`classify_topic`;
* :mod:`.messages` - what is said, in English and Chinese: bands, comments, labels, advice;
* :mod:`.render` - text helpers, ``rich`` panels, plain lines, TensorBoard markdown;
* :mod:`.callback` - :class:`DistillationMonitor`, the ``TrainerCallback``.
"""

from __future__ import annotations

from .callback import DistillationMonitor, greedy_translate
from .messages import advice_key, band, comment
from .render import plain_diff, shorten, shown, word_diff
from .scores import (
    batch_kl,
    collapse_suspected,
    laziness,
    normalised_kl,
    repetition,
    sample_kl,
    select_samples,
    text_similarity,
    trend_of,
)
from .topics import BUILTIN_TOPICS, OTHER_TOPIC, classify_topic, merge_topics, topic_name

__all__ = [
    "BUILTIN_TOPICS",
    "OTHER_TOPIC",
    "DistillationMonitor",
    "advice_key",
    "band",
    "batch_kl",
    "classify_topic",
    "collapse_suspected",
    "comment",
    "greedy_translate",
    "laziness",
    "merge_topics",
    "normalised_kl",
    "plain_diff",
    "repetition",
    "sample_kl",
    "select_samples",
    "shorten",
    "shown",
    "text_similarity",
    "topic_name",
    "trend_of",
    "word_diff",
]
