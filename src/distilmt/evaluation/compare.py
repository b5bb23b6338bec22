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
from distilmt.evaluation.speed import measure_in_subprocess, profile
from distilmt.evaluation.translate import open_model

log = logging.getLogger(__name__)

ROW_KEYS = (
    "name", "path", "engine", "bleu", "chrf", "ter", "params", "params_non_embedding", "size_mb", "compression",
    "sentences_per_s", "speedup", "retention", "distinct_ratio", "top_output_share", "repetition_rate",
    "empty_outputs", "length_ratio", "copy_rate", "collapsed", "latency_bs1_ms", "throughput_bs32",
    "tokens_per_s", "peak_mem_mb", "model_mem_mb", "translate_s", "bleu_signature", "chrf_signature",
    "ter_signature",
)
"""Columns of a comparison row, in CSV order. sentences_per_s == throughput_bs32 (greedy, batch 32)."""

# (row key, header, format) of the columns shown in the terminal table and the Markdown table
DISPLAY = (
    ("name", "model", "{}"), ("engine", "engine", "{}"), ("bleu", "BLEU", "{:.2f}"), ("chrf", "chrF", "{:.2f}"),
    ("ter", "TER", "{:.2f}"), ("retention", "BLEU kept", "{:.1%}"), ("params", "params", "{:,}"),
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
                    isolate_speed: bool = True, ct2_options: dict | None = None) -> Comparison:
    """Translate ``sources`` with each ``(name, path)`` model (HF or CTranslate2 directory) and compare them.

    Quality uses ``num_beams`` / ``batch_size`` on all sources. Speed and memory are measured greedily on the
    first ``speed_sentences`` sources (0 = skip) at batch 32 and batch 1 (see speed.DEFAULT_SETTINGS,
    overridable with ``speed_settings``), each model in its own process unless ``isolate_speed`` is False
    (in-process timing is cheaper for tests, but then peak memory is the whole process's). ``ct2_options``
    go to :class:`~distilmt.evaluation.translate.Ct2Translator` (e.g. intra_threads, inter_threads).
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
    return Comparison([{key: row.get(key) for key in ROW_KEYS} for row in rows], all_hyps)


def _speed(path, sentences: list[str], settings: dict | None, isolate: bool, ct2_options: dict,
           max_new_tokens: int) -> dict:
    empty = {"latency_bs1_ms": None, "throughput_bs32": None, "sentences_per_s": None, "tokens_per_s": None,
             "peak_mem_mb": None, "model_mem_mb": None}
    if not sentences:
        return empty
    settings = {"batch_sizes": [32, 1], "num_beams": 1, "max_new_tokens": max_new_tokens, "ct2": ct2_options,
                **(settings or {})}
    measured = measure_in_subprocess(path, sentences, settings) if isolate else profile(path, sentences, settings)
    by_bs = measured["by_batch_size"]
    out = dict(empty, peak_mem_mb=measured["peak_rss_mb"], model_mem_mb=measured["model_mem_mb"])
    if "32" in by_bs:
        out.update(throughput_bs32=by_bs["32"]["sentences_per_s"], sentences_per_s=by_bs["32"]["sentences_per_s"],
                   tokens_per_s=by_bs["32"]["tokens_per_s"])
    if "1" in by_bs:
        out["latency_bs1_ms"] = by_bs["1"]["latency_ms"]
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


def format_table(rows: Sequence[dict], title: str = "Models compared"):
    """A rich Table of the main columns; collapsed models are shown in red."""
    from rich.table import Table

    table = Table(title=title)
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
