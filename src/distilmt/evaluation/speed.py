"""Translation speed and memory.

:func:`measure_speed` times a :class:`~distilmt.evaluation.translate.Translator` in this process.
:func:`measure_in_subprocess` runs the same measurement in a fresh Python process
(``python -m distilmt.evaluation.speed``, JSON on stdin and stdout), so that each engine is timed
alone: a Hugging Face model and a CTranslate2 model in one process fight over threads (HF ran at
half speed that way here), and the peak memory of a process is only meaningful for one model.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import psutil
import torch

from ..models.translators import open_model

DEFAULT_SETTINGS: dict = {
    "batch_sizes": [1, 32, 128],  # greedy, one measurement per batch size (1 gives latency_ms)
    "num_beams": 1,               # beam size of the batch_sizes measurements (1 = greedy)
    "beam_batch_sizes": [32],     # also timed with beam search of `beam` beams ([] = skip)
    "beam": 4,
    "repeats": 3,                 # timed passes; the median is reported, with the slowest and fastest
    "warmup": 1,                  # untimed passes first
    "min_seconds": 0.5,           # each timed pass repeats the sentences until it has run this long (timeit-style)
    "max_new_tokens": 128,
    "latency_sentences": 16,      # batch size 1 is timed on at most this many sentences
    "ct2": {},                    # Ct2Translator options, e.g. {"intra_threads": 1, "inter_threads": 2}
    "torch_threads": 0,           # torch.set_num_threads for HF models (0 = torch's default)
}
"""What :func:`profile` measures. A batch size larger than the number of sentences is one batch of all of
them (with the default 64 timed sentences, "batch 128" is one batch of 64)."""


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (since :func:`reset_peak_rss`), in MiB."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def reset_peak_rss() -> bool:
    """Set the peak resident memory back to the current one (Linux: /proc/self/clear_refs); False if impossible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def current_rss_mb() -> float:
    """This process's resident memory now, in MiB."""

    return psutil.Process().memory_info().rss / 2**20


def count_output_tokens(tokenizer, texts: Sequence[str]) -> int:
    """Subword tokens in the translations (re-encoded, no special tokens): same count for every engine."""
    return sum(len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"])


def measure_speed(translator, sentences: Sequence[str], batch_size: int = 32, num_beams: int = 1,
                  repeats: int = 3, warmup: int = 1, max_new_tokens: int = 128, min_seconds: float = 0.0) -> dict:
    """Time ``repeats`` full passes over ``sentences`` after ``warmup`` untimed ones.

    A timed pass translates all ``sentences`` again and again until it has run ``min_seconds`` (at least once), and
    its time is the elapsed time per translation of them: a fast engine on few sentences would otherwise be timed
    over a few milliseconds, where a scheduler tick decides the figure.

    Returns sentences (timed per pass), sentences_per_s (median pass), spread (slowest, fastest
    sentences/s), tokens_per_s (output subword tokens per second at the median), latency_ms (median ms per
    sentence, batch size 1 only), latency_spread (fastest, slowest ms per sentence, batch size 1 only) and
    peak_rss_mb (peak memory of this process so far).
    """
    if not sentences:
        raise ValueError("no sentences to time")
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    sentences = list(sentences)
    for _ in range(warmup):
        translator.translate(sentences, num_beams=num_beams, batch_size=batch_size, max_new_tokens=max_new_tokens)
    times, hyps = [], []
    for _ in range(repeats):
        start, done = time.perf_counter(), 0
        while done == 0 or time.perf_counter() - start < min_seconds:
            hyps = translator.translate(sentences, num_beams=num_beams, batch_size=batch_size,
                                        max_new_tokens=max_new_tokens)
            done += 1
        times.append(max((time.perf_counter() - start) / done, 1e-9))
    median = statistics.median(times)
    n = len(sentences)
    single = batch_size == 1
    result = {
        "sentences": n,
        "sentences_per_s": n / median,
        "spread": (n / max(times), n / min(times)),
        "tokens_per_s": count_output_tokens(translator.tokenizer, hyps) / median,
        "latency_ms": 1000 * median / n if single else None,
        "latency_spread": (1000 * min(times) / n, 1000 * max(times) / n) if single else None,
        "peak_rss_mb": peak_rss_mb(),
    }
    return result


def profile(model_dir: str | Path, sentences: Sequence[str], settings: dict | None = None) -> dict:
    """Load one model and time it at each of ``settings['batch_sizes']`` and, with beam search, at each of
    ``settings['beam_batch_sizes']`` (see DEFAULT_SETTINGS).

    Returns engine, load_s, peak_rss_mb (whole process, all measurements), model_mem_mb (that peak minus
    the memory after imports, i.e. what the model and generation added), by_batch_size
    {"32": measure_speed(...)}, beam and by_beam_batch_size (same, with beam search), and peak_reset:
    True when the peak memory was reset before each measurement, so each one's peak_rss_mb is the peak of
    that batch size alone (Linux); otherwise they are cumulative (measured smallest batch first).
    Memory figures describe one model only when this runs in a fresh process (measure_in_subprocess).
    """

    # runtimes are imported before the baseline, so they do not count as model memory
    settings = {**DEFAULT_SETTINGS, **(settings or {})}
    if settings["torch_threads"]:
        torch.set_num_threads(int(settings["torch_threads"]))

    baseline = current_rss_mb()
    start = time.perf_counter()
    translator = open_model(model_dir, **settings["ct2"])
    load_s = time.perf_counter() - start
    peaks = [peak_rss_mb()]
    reset = True

    def timed(batch_size: int, num_beams: int) -> dict:
        nonlocal reset
        reset = reset_peak_rss() and reset
        subset = list(sentences)[: settings["latency_sentences"]] if batch_size == 1 else sentences
        result = measure_speed(translator, subset, batch_size=batch_size, num_beams=num_beams,
                               repeats=settings["repeats"], warmup=settings["warmup"],
                               max_new_tokens=settings["max_new_tokens"], min_seconds=settings["min_seconds"])
        peaks.append(result["peak_rss_mb"])
        return result

    by_batch_size = {str(bs): timed(bs, settings["num_beams"]) for bs in sorted(settings["batch_sizes"])}
    by_beam = {str(bs): timed(bs, settings["beam"]) for bs in sorted(settings["beam_batch_sizes"])}
    peak = max(peaks)
    return {"engine": translator.engine, "load_s": load_s, "peak_rss_mb": peak,
            "model_mem_mb": max(peak - baseline, 0.0), "by_batch_size": by_batch_size,
            "beam": settings["beam"], "by_beam_batch_size": by_beam, "peak_reset": reset}


def measure_in_subprocess(model_dir: str | Path, sentences: Sequence[str], settings: dict | None = None,
                          timeout: float | None = None) -> dict:
    """Run :func:`profile` in a fresh ``python -m distilmt.evaluation.speed`` process and return its result."""
    request = json.dumps({"model_dir": str(model_dir), "sentences": list(sentences), "settings": settings or {}})
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "distilmt.evaluation.speed"], input=request, capture_output=True,
                          text=True, timeout=timeout, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"speed measurement of {model_dir} failed: {last}")
    return json.loads(lines[-1])


def _main() -> None:
    request = json.loads(sys.stdin.read())
    result = profile(request["model_dir"], request["sentences"], request.get("settings"))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    _main()
