"""Evaluate several models side by side (quality, health, size, speed, memory) and write the table.

Each row is relative to a reference model (the teacher by default): compression = reference params /
params, speedup = sentences_per_s / reference sentences_per_s, retention = BLEU / reference BLEU.
"""

from __future__ import annotations

import csv
import gc
import io
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from rich.markup import escape
from rich.table import Table

from ..errors import SemanticUnavailable
from ..models.generation import cut_sources
from ..models.translators import open_model
from ..rundir import write_text_atomic
from .metrics import health, quality
from .semantic import semantic_scorer
from .speed import measure_in_subprocess, profile
from .testsets import TestSet, cannot_translate, model_direction

log = logging.getLogger(__name__)

ROW_KEYS = (
    "name", "path", "engine", "device", "bleu", "chrf", "ter", "semantic", "semantic_metric", "params", "params_non_embedding",
    "size_mb", "compression",
    "sentences_per_s", "sentences_per_s_rounds", "speedup", "speedup_min", "speedup_max", "speedup_rounds",
    "speed_rounds", "speed_noisy", "retention", "distinct_ratio", "top_output_share", "repetition_rate",
    "empty_outputs", "length_ratio", "copy_rate", "collapsed", "cut_sources", "latency_bs1_ms", "latency_bs1_ms_min",
    "latency_bs1_ms_max", "throughput_bs32", "throughput_bs32_min", "throughput_bs32_max", "throughput_bs128",
    "throughput_bs128_min", "throughput_bs128_max", "throughput_bs32_beam4", "throughput_bs32_beam4_min",
    "throughput_bs32_beam4_max", "tokens_per_s", "peak_mem_mb", "peak_mem_bs1_mb", "peak_mem_bs32_mb",
    "peak_mem_bs128_mb", "peak_mem_bs32_beam4_mb", "model_mem_mb", "translate_s", "bleu_signature",
    "chrf_signature", "ter_signature", "test_sets",
)
"""Columns of a comparison row, in CSV order. The quality and health columns are those of the primary test
set; ``test_sets`` holds every set's (primary first) as ``{NAME: {SET_KEYS...}}``, and ``collapsed`` is true
when the model collapsed on any of them. In CSV, ``test_sets`` becomes ``NAME/key`` columns for the sets
other than the primary. ``device`` is where the model was evaluated and timed (the GPU when there is one: cuda,
else cpu). Speed (speed.DEFAULT_SETTINGS): throughput_bsN is sentences/s
at batch N, greedy (``_beam4``: beam search), the median of the timed passes, ``_min``/``_max`` the slowest
and fastest pass; sentences_per_s == throughput_bs32 (greedy, batch 32); latency_bs1_ms is ms per sentence
at batch 1 (median, ``_min``/``_max``); tokens_per_s is output subword tokens/s at greedy batch 32;
peak_mem_bsN_mb is the peak resident memory while generating at that setting, peak_mem_mb the peak of the
whole measuring process. A grid other than the default adds its own throughput_*/peak_mem_* keys.
Models are timed in ``speed_rounds`` interleaved rounds (each round every model once, on the same sentences): each
speed figure is the model's best round (the highest throughput, the lowest latency; ``_min``/``_max`` the slowest
and fastest round), as timeit reports the fastest repeat, because load from other processes only ever slows a round
down; ``speedup`` is the ratio of the best rounds, ``speedup_rounds`` the ratio in each round and
``speedup_min``/``_max`` their range, ``sentences_per_s_rounds`` the model's own throughput in each round.
``speed_noisy`` is true when the speed-up is not reproduced by the next rounds: the ratio of the two models'
second-best rounds differs from the ratio of their best rounds by more than :data:`NOISY_SPREAD` (the table then
marks the speed-up with "?"). One disturbed round does not make a best-of speed-up doubtful; a best round that the
other rounds do not come near does."""

NOISY_SPREAD = 0.15
"""How far the speed-up from the second-best rounds may be from the one from the best rounds before it is marked as
not to be trusted (measured on 2 idle cores: the best-of speed-ups of two back-to-back runs agreed within 12 % while
the per-round ratios of one run spread by up to 47 %)."""

# (row key, header, format) of the columns shown in the terminal table and the Markdown table
DISPLAY = (
    ("name", "model", "{}"), ("engine", "engine", "{}"), ("device", "device", "{}"), ("bleu", "BLEU", "{:.2f}"),
    ("chrf", "chrF", "{:.2f}"),
    ("ter", "TER", "{:.2f}"), ("semantic", "semantic", "{:.3f}"), ("retention", "BLEU kept", "{:.1%}"),
    ("params", "params", "{:,}"),
    ("size_mb", "size MB", "{:.1f}"), ("compression", "compression", "{:.2f}x"),
    ("sentences_per_s", "sent/s bs32", "{:.1f}"), ("speedup", "speedup", "{:.2f}x"),
    ("latency_bs1_ms", "ms/sent bs1", "{:.1f}"), ("peak_mem_mb", "peak MB", "{:.0f}"),
    ("distinct_ratio", "distinct", "{:.2f}"), ("repetition_rate", "repetition", "{:.2f}"),
    ("collapsed", "collapsed", "{}"),
)


SET_KEYS = (
    "direction", "sentences", "bleu", "chrf", "ter", "semantic", "semantic_metric", "retention", "distinct_ratio",
    "top_output_share", "repetition_rate", "empty_outputs", "length_ratio", "copy_rate", "collapsed", "cut_sources",
    "translate_s", "bleu_signature", "chrf_signature", "ter_signature", "unavailable",
)
"""Keys of each ``row["test_sets"][NAME]``: quality, semantic similarity, retention and health on that set;
``cut_sources`` is how many of its sources were longer than ``max_source_tokens`` of the model's tokenizer and
translated cut to that (:func:`~distilmt.models.generation.cut_sources`); ``unavailable`` says why the model was not
scored on it (None when it was; then the scores are None)."""

SET_DISPLAY = ("bleu", "chrf", "ter", "semantic", "retention", "distinct_ratio", "repetition_rate")
"""DISPLAY columns shown once per test set when there are several."""


class Column(NamedTuple):
    """A displayed column: a row key (of ``row["test_sets"][test_set]`` when test_set is set)."""

    key: str
    header: str
    fmt: str
    test_set: str | None = None


@dataclass
class Comparison:
    """Rows (one per model, JSON-ready, keys ROW_KEYS), each model's translations of the primary set by
    name, of every set by set name (``hyps_by_set[set][model]``), and the test sets (primary first).

    Unpacks as ``rows, hyps = evaluate_models(...)``.
    """

    rows: list[dict]
    hyps: dict[str, list[str]]
    hyps_by_set: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    sets: list[TestSet] = field(default_factory=list)

    def __iter__(self):
        return iter((self.rows, self.hyps))

    def set_info(self) -> list[dict]:
        """Name, direction, size and origin of each test set (for comparison.json's ``test_sets``)."""
        return [test_set.describe() for test_set in self.sets]


def evaluate_models(entries: Sequence[tuple[str, str | Path]], sources: Sequence[str], references: Sequence[str],
                    target_lang: str, reference_name: str = "teacher", num_beams: int = 4, batch_size: int = 64,
                    max_new_tokens: int = 128, speed_sentences: int = 64, speed_settings: dict | None = None,
                    isolate_speed: bool = True, ct2_options: dict | None = None,
                    semantic: bool = True, test_set_name: str = "test", direction: str = "",
                    test_sets: Sequence[TestSet] = (), speed_rounds: int = 3,
                    max_source_tokens: int = 256) -> Comparison:
    """Translate ``sources`` with each ``(name, path)`` model (HF or CTranslate2 directory) and compare them.

    Quality uses ``num_beams`` / ``batch_size`` on all sources, each cut to ``max_source_tokens`` tokens of the model's
    tokenizer (the count is in ``cut_sources`` and the table's notes). Speed and memory are measured greedily on the
    first ``speed_sentences`` sources (0 = skip) at batch 32 and batch 1 (see speed.DEFAULT_SETTINGS,
    overridable with ``speed_settings``) in ``speed_rounds`` interleaved rounds (see :data:`ROW_KEYS`), each model
    in its own process unless ``isolate_speed`` is False
    (in-process timing is cheaper for tests, but then peak memory is the whole process's). ``ct2_options``
    go to :class:`~distilmt.evaluation.translate.Ct2Translator` (e.g. intra_threads, inter_threads).
    ``semantic`` adds the semantic similarity to the references (BERTScore F1 for English, e5 cosine
    otherwise) when its optional packages are installed (``pip install 'distilmt[semantic]'``).

    ``sources``/``references`` are the primary test set, named ``test_set_name``, in ``direction`` ("SRC-TGT",
    "" if unknown); ``test_sets`` are more sets, each scored for quality, semantic similarity, retention and
    health (speed, size and memory stay once per model). A model trained in a run directory for another
    direction than a set's is not scored on it (its ``unavailable`` says why).
    Returns ``Comparison(rows, hyps, hyps_by_set, sets)``; rows keep the ROW_KEYS, translations stay
    out of them.
    """
    sets = [TestSet(test_set_name, list(sources), list(references), target_lang, direction), *test_sets]
    for test_set in sets:
        if len(test_set.sources) != len(test_set.references):
            raise ValueError(f"test set '{test_set.name}': {len(test_set.sources)} sources but "
                             f"{len(test_set.references)} references; they must pair up")
        if not test_set.sources:
            raise ValueError(f"test set '{test_set.name}': no test sentences to evaluate on")
    set_names = [t.name for t in sets]
    if len(set(set_names)) != len(set_names):
        raise ValueError(f"test set names must be unique, got {set_names}")
    names = [name for name, _ in entries]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be unique, got {names}")
    ct2_options = ct2_options or {}
    scorers: dict[str, tuple] = {}  # target language -> (scorer or None, metric name)
    rows: list[dict] = []
    hyps_by_set: dict[str, dict[str, list[str]]] = {t.name: {} for t in sets}
    for name, path in entries:
        log.info("evaluating %s (%s)", name, path)
        translator = open_model(path, **ct2_options)
        trained_for = model_direction(path)
        per_set: dict[str, dict] = {}
        for test_set in sets:
            reason = cannot_translate(trained_for, test_set)
            if reason:
                log.warning("%s is not scored on test set '%s': %s", name, test_set.name, reason)
                per_set[test_set.name] = _set_scores(test_set, None, reason=reason)
                continue
            sources, cut = cut_sources(translator.tokenizer, test_set.sources, max_source_tokens)
            if cut:
                log.warning("%s: %d of %d sources of test set '%s' are longer than %d tokens and were cut to them "
                            "(eval.max_source_tokens)", name, cut, len(sources), test_set.name, max_source_tokens)
            start = time.perf_counter()
            hyps = translator.translate(sources, num_beams=num_beams, batch_size=batch_size,
                                        max_new_tokens=max_new_tokens)
            scorer = _scorer(scorers, test_set.target_lang, semantic)
            per_set[test_set.name] = _set_scores(test_set, hyps, scorer, time.perf_counter() - start)
            per_set[test_set.name]["cut_sources"] = cut
            hyps_by_set[test_set.name][name] = hyps
        primary = per_set[sets[0].name]
        row = {"name": name, "path": str(path), "engine": translator.engine, "device": translator.device,
               **{k: v for k, v in primary.items() if k in ROW_KEYS}}
        row["collapsed"] = any(bool(scores["collapsed"]) for scores in per_set.values())
        row["test_sets"] = per_set
        counts = translator.num_parameters()
        row["params"], row["params_non_embedding"] = counts.get("params"), counts.get("params_non_embedding")
        row["size_mb"] = translator.size_mb()
        del translator
        gc.collect()
        # timed on the primary set, or the first set the model can translate
        row["_timed"] = next((t for t in sets if per_set[t.name]["unavailable"] is None), sets[0]).sources
        rows.append(row)
    timed_rows = _timed_in_rounds(rows, speed_sentences, speed_settings, isolate_speed, ct2_options, max_new_tokens,
                                  speed_rounds)
    add_relative(rows, reference_name, timed_rows)
    # ROW_KEYS first; a speed grid other than the default adds its own throughput_*/peak_mem_* keys after them
    extra = [k for row in rows for k in row if k not in ROW_KEYS and k.startswith(("throughput_", "peak_mem_"))]
    keys = list(ROW_KEYS) + list(dict.fromkeys(extra))
    return Comparison([{key: row.get(key) for key in keys} for row in rows], hyps_by_set[sets[0].name],
                      hyps_by_set, sets)


def _scorer(cache: dict, target_lang: str, semantic: bool) -> tuple:
    """(scorer or None, metric name or why not) for a target language, built once."""
    if target_lang not in cache:
        scorer, metric = None, "not computed"
        if semantic:
            try:
                scorer = semantic_scorer(target_lang)
                metric = scorer.name
            except SemanticUnavailable as exc:
                metric = f"unavailable: {exc}"
                log.warning("%s", exc)
        cache[target_lang] = (scorer, metric)
    return cache[target_lang]


def _set_scores(test_set: TestSet, hyps: list[str] | None, scorer: tuple = (None, None), seconds: float | None = None,
                reason: str | None = None) -> dict:
    """One model's SET_KEYS on one test set (all None but direction/sentences/unavailable without ``hyps``)."""
    out = {key: None for key in SET_KEYS}
    out.update(direction=test_set.direction or None, sentences=len(test_set.sources), unavailable=reason)
    if hyps is None:
        return out
    out.update(quality(hyps, test_set.references, test_set.target_lang))  # bleu, chrf, ter, sacrebleu signatures
    out["semantic"] = scorer[0].score(hyps, test_set.references) if scorer[0] is not None else None
    out["semantic_metric"] = scorer[1]
    out.update(health(hyps, references=test_set.references, sources=test_set.sources))
    out["translate_s"] = seconds
    return out


def _speed(path, sentences: list[str], settings: dict | None, isolate: bool, ct2_options: dict,
           max_new_tokens: int) -> dict:
    empty = {key: None for key in ROW_KEYS
             if key.startswith(("latency_", "throughput_", "peak_mem_")) or key in (
                 "sentences_per_s", "tokens_per_s", "model_mem_mb")}
    if not sentences:
        return empty
    settings = {"max_new_tokens": max_new_tokens, "ct2": ct2_options, **(settings or {})}
    measured = measure_in_subprocess(path, sentences, settings) if isolate else profile(path, sentences, settings)
    out = dict(empty, peak_mem_mb=measured["peak_rss_mb"], model_mem_mb=measured["model_mem_mb"])
    groups = [(measured["by_batch_size"], ""),
              (measured.get("by_beam_batch_size", {}), f"_beam{measured.get('beam')}")]
    for by_bs, suffix in groups:
        for bs, m in by_bs.items():
            out[f"peak_mem_bs{bs}{suffix}_mb"] = m["peak_rss_mb"]
            if bs == "1" and not suffix:
                out["latency_bs1_ms"] = m["latency_ms"]
                out["latency_bs1_ms_min"], out["latency_bs1_ms_max"] = m["latency_spread"]
            else:
                out[f"throughput_bs{bs}{suffix}"] = m["sentences_per_s"]
                out[f"throughput_bs{bs}{suffix}_min"], out[f"throughput_bs{bs}{suffix}_max"] = m["spread"]
    if "32" in measured["by_batch_size"]:
        out["sentences_per_s"] = out["throughput_bs32"]
        out["tokens_per_s"] = measured["by_batch_size"]["32"]["tokens_per_s"]
    return out


def _timed_in_rounds(rows: list[dict], speed_sentences: int, settings: dict | None, isolate: bool,
                     ct2_options: dict, max_new_tokens: int, rounds: int) -> list[list[dict]]:
    """Time every model once per round, the rounds one after another; each row gets its best round's figure of
    each speed key (:func:`best_of_rounds`). Returns the rounds' raw figures per row, for the speed-ups."""
    per_round = {"repeats": 1, "warmup": 1, **(settings or {})} if rounds > 1 else settings
    measured: list[list[dict]] = [[] for _ in rows]
    for number in range(max(1, rounds) if speed_sentences else 0):
        log.info("speed: round %d of %d", number + 1, rounds)
        for i, row in enumerate(rows):
            measured[i].append(_speed(row["path"], row["_timed"][:speed_sentences], per_round, isolate, ct2_options,
                                      max_new_tokens))
    for row, runs in zip(rows, measured):
        del row["_timed"]
        row.update(_speed(row["path"], [], None, isolate, ct2_options, max_new_tokens))  # every speed key, empty
        if len(runs) == 1:  # one round: its own figures, with the spread of its timed passes
            row.update(runs[0])
            runs = []
        for key in (runs[0] if runs else {}):
            values = [r[key] for r in runs if r[key] is not None]
            if not values or key.endswith(("_min", "_max")):
                continue
            row[key] = best_of_rounds(key, values)
            if f"{key}_min" in row and len(runs) > 1:  # the spread over rounds replaces the within-round one
                row[f"{key}_min"], row[f"{key}_max"] = min(values), max(values)
        row["speed_rounds"] = len(measured[0]) if measured and measured[0] else 0
    return measured


def best_of_rounds(key: str, values: Sequence[float]) -> float:
    """A speed key's figure over the rounds: the lowest latency, the highest throughput or tokens/s (a round can
    only be slowed down by other load, never sped up), the largest memory."""
    return min(values) if key.startswith("latency_") else max(values)


def _ratio(a, b) -> float | None:
    return a / b if a is not None and b not in (None, 0) else None


def second_best(runs: Sequence[dict]) -> float | None:
    """A model's second-fastest round (``sentences_per_s``), or None with fewer than two rounds."""
    speeds = sorted((r["sentences_per_s"] for r in runs if r.get("sentences_per_s")), reverse=True)
    return speeds[1] if len(speeds) > 1 else None


def unreproduced(speedup: float, runs: Sequence[dict], ref_runs: Sequence[dict]) -> bool:
    """Whether the best-of ``speedup`` is not reproduced by the second-best rounds: their ratio is more than
    :data:`NOISY_SPREAD` away from it (False with fewer than two rounds)."""
    again = _ratio(second_best(runs), second_best(ref_runs))
    return again is not None and abs(again - speedup) / speedup > NOISY_SPREAD


def add_relative(rows: list[dict], reference_name: str, rounds: list[list[dict]] | None = None) -> None:
    """Compression, speed-up and retention against the row ``reference_name``: the speed-up is the ratio of the two
    rows' ``sentences_per_s`` (their best rounds). With ``rounds`` (each row's speed figures per interleaved round)
    the per-round ratios give its range, and :func:`unreproduced` the noisy flag."""
    ref = next((r for r in rows if r["name"] == reference_name), None)
    if ref is None:
        log.warning("reference model '%s' is not among the models; relative columns are left empty", reference_name)
    ref_rounds = rounds[rows.index(ref)] if ref is not None and rounds else None
    for i, row in enumerate(rows):
        row["compression"] = _ratio(ref["params"], row["params"]) if ref else None
        row["speedup"] = _ratio(row["sentences_per_s"], ref["sentences_per_s"]) if ref else None
        ratios = [r for r in (_ratio(mine["sentences_per_s"], theirs["sentences_per_s"])
                              for mine, theirs in zip(rounds[i], ref_rounds)) if r is not None] if ref_rounds else []
        if rounds and rounds[i]:
            row["sentences_per_s_rounds"] = [round(r["sentences_per_s"], 2) for r in rounds[i]
                                             if r["sentences_per_s"] is not None]
        if ratios and row["speedup"] is not None:
            row["speedup_rounds"] = [round(r, 4) for r in ratios]
            row["speedup_min"], row["speedup_max"] = min(ratios), max(ratios)
            row["speed_noisy"] = unreproduced(row["speedup"], rounds[i], ref_rounds)
        row["retention"] = _ratio(row["bleu"], ref["bleu"]) if ref else None
        for set_name, scores in (row.get("test_sets") or {}).items():
            ref_scores = (ref.get("test_sets") or {}).get(set_name, {}) if ref else {}
            scores["retention"] = _ratio(scores["bleu"], ref_scores.get("bleu"))


def cell(row: dict, key: str, fmt: str) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    if key == "speedup" and row.get("speed_noisy"):  # the per-round ratios disagree by more than NOISY_SPREAD
        return fmt.format(value) + "?"
    if isinstance(value, bool):
        return "yes" if value else "no"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def test_set_names(rows: Sequence[dict]) -> list[str]:
    """The test sets the rows were scored on, primary first."""
    return list(dict.fromkeys(name for row in rows for name in (row.get("test_sets") or {})))


def columns(rows: Sequence[dict]) -> list[Column]:
    """The displayed columns: DISPLAY, with the SET_DISPLAY ones repeated per test set when there are several."""
    sets = test_set_names(rows)
    if len(sets) < 2:
        return [Column(key, header, fmt) for key, header, fmt in DISPLAY]
    per_set = [(key, header, fmt) for key, header, fmt in DISPLAY if key in SET_DISPLAY]
    head = [Column(key, header, fmt) for key, header, fmt in DISPLAY[:2]]
    tail = [Column(key, header, fmt) for key, header, fmt in DISPLAY[2:] if key not in SET_DISPLAY]
    return head + [Column(key, header, fmt, name) for name in sets for key, header, fmt in per_set] + tail


def column_cell(row: dict, column: Column) -> str:
    if column.test_set is None:
        return cell(row, column.key, column.fmt)
    return cell((row.get("test_sets") or {}).get(column.test_set, {}), column.key, column.fmt)


def semantic_note(rows: Sequence[dict]) -> str | None:
    """One line naming the semantic metric of the rows (or why it is missing), None without rows."""
    metrics = list(dict.fromkeys(scores.get("semantic_metric") for row in rows
                                 for scores in (row.get("test_sets") or {}).values() if scores.get("semantic_metric")))
    if len(metrics) > 1:  # sets with different target languages
        by_set = {name: next((row["test_sets"][name].get("semantic_metric") for row in rows
                              if (row.get("test_sets") or {}).get(name, {}).get("semantic_metric")), None)
                  for name in test_set_names(rows)}
        return "semantic: " + "; ".join(f"{name}: {metric}" for name, metric in by_set.items() if metric)
    metric = metrics[0] if metrics else next((r.get("semantic_metric") for r in rows if r.get("semantic_metric")), None)
    return f"semantic: {metric}" if metric else None


def speed_note(rows: Sequence[dict]) -> str | None:
    """One line on how the speed-ups were timed, and which ones varied too much between rounds to trust."""
    rounds = max((row.get("speed_rounds") or 0 for row in rows), default=0)
    if rounds < 2:
        return None
    noisy = [row["name"] for row in rows if row.get("speed_noisy")]
    spread = ", ".join(f"{row['name']} {row['speedup_min']:.2f}-{row['speedup_max']:.2f}x" for row in rows
                       if row.get("speedup_min") is not None and row.get("speedup") not in (None, 1.0))
    text = f"speed-up: best of {rounds} interleaved timing rounds (per-round range: {spread})" if spread else \
        f"speed: best of {rounds} interleaved timing rounds"
    if noisy:
        text += (f"; marked ?: {', '.join(noisy)}: the second-best rounds give a speed-up more than "
                 f"{NOISY_SPREAD:.0%} away (a loaded machine): not to be trusted")
    return text


def set_notes(rows: Sequence[dict]) -> list[str]:
    """One line per model and test set it was not scored on, or collapsed on, when there are several sets; one per
    model and set whose sources were cut to ``max_source_tokens`` before translating."""
    several = len(test_set_names(rows)) > 1
    notes = []
    for row in rows:
        for name, scores in (row.get("test_sets") or {}).items():
            if several and scores.get("unavailable"):
                notes.append(f"{row['name']} not scored on {name}: {scores['unavailable']}")
            elif several and scores.get("collapsed"):
                notes.append(f"{row['name']} collapsed on {name}")
            if scores.get("cut_sources"):
                notes.append(f"{row['name']}: {scores['cut_sources']} of {scores['sentences']} {name} sources were "
                             "cut to eval.max_source_tokens before translating")
    return notes


def format_table(rows: Sequence[dict], title: str = "Models compared"):
    """A rich Table of the main columns (a group per test set when there are several: the set's name over
    its columns); collapsed models are shown in red; the caption names the semantic metric."""

    note = "\n".join(filter(None, [semantic_note(rows), speed_note(rows), *set_notes(rows)]))
    table = Table(title=title, caption=escape(note) if note else None)  # escaped: "[semantic]" is not markup
    for i, column in enumerate(columns(rows)):
        header = f"{column.test_set}\n{column.header}" if column.test_set else column.header
        table.add_column(escape(header), justify="left" if i < 2 else "right", no_wrap=i == 0)
    for row in rows:
        table.add_row(*[column_cell(row, column) for column in columns(rows)],
                      style="bold red" if row.get("collapsed") else None)
    return table


def to_markdown(rows: Sequence[dict]) -> str:
    """The same columns as :func:`format_table`, as a GitHub Markdown table (collapsed models in bold);
    a test set's columns are headed ``NAME BLEU``, ``NAME chrF`` ... when there are several sets."""
    shown = columns(rows)
    headers = [f"{c.test_set} {c.header}" if c.test_set else c.header for c in shown]
    lines = ["| " + " | ".join(h.replace("|", "\\|") for h in headers) + " |",
             "|" + "|".join("---" if i < 2 else "---:" for i in range(len(shown))) + "|"]
    for row in rows:
        cells = [column_cell(row, column).replace("|", "\\|") for column in shown]
        if row.get("collapsed"):
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_json(rows: Sequence[dict], path: str | Path, **extra) -> Path:
    """Write ``{"models": rows, **extra}`` as JSON."""
    return write_text_atomic(path, json.dumps({"models": list(rows), **extra}, indent=2, ensure_ascii=False) + "\n")


def write_csv(rows: Sequence[dict], path: str | Path) -> Path:
    """Write the rows as CSV, columns in ROW_KEYS order (plus any extra keys at the end); ``test_sets``
    becomes ``NAME/key`` columns for each set other than the primary one (whose scores are the row's own)."""

    flat = []
    for row in rows:
        out = {key: " ".join(map(str, value)) if isinstance(value, list) else value  # the *_rounds lists
               for key, value in row.items() if key != "test_sets"}
        for name, scores in list((row.get("test_sets") or {}).items())[1:]:
            out.update({f"{name}/{key}": value for key, value in scores.items()})
        flat.append(out)
    keys = [k for k in ROW_KEYS if k != "test_sets"] + [k for row in flat for k in row if k not in ROW_KEYS]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(keys)), lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return write_text_atomic(path, buffer.getvalue())


def write_translations(comparison: Comparison, path: str | Path) -> Path:
    """translations.json: the primary set's sources, references and each model's translations (what the
    report's sample table reads), plus every other set's under ``test_sets``."""
    primary, *others = comparison.sets
    data = {"sources": primary.sources, "references": primary.references, "hypotheses": comparison.hyps}
    if others:
        data["test_sets"] = {t.name: {"direction": t.direction, "sources": t.sources, "references": t.references,
                                      "hypotheses": comparison.hyps_by_set.get(t.name, {})} for t in others}
    return write_text_atomic(path, json.dumps(data, ensure_ascii=False, indent=1))


