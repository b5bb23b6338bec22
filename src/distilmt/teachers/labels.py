"""Sequence-level KD (hard labels): the teacher translates the training sources once, the student learns from that.

Kim & Rush (2016): a student trained on the teacher's beam-search translations of the training sources imitates the
teacher's *sequence* distribution (its mode), not only its next-token distributions; and the student never needs
the teacher while it trains — the labels are plain text on disk.

On disk (``RUN_DIR/distilled/``)::

    manifest.json           written before the first shard: the fingerprint (sha256 of the training sources, of
                            the tokenizer, of the teacher's weights, of the generation settings) and the settings
    shard-00000.tsv         source <TAB> label <TAB> teacher score, for sources [0, shard_size), in corpus order
    shard-00000.nbest.jsonl the n-best of that shard (only when num_return_sequences > 1)
    ...
    train.tsv               source <TAB> label: every kept pair in the original order (filters applied)
    nbest.jsonl             {"index", "source", "hypotheses": [{"text", "score"}, ...]} per source (n-best only)
    stats.json              written last: counts (generated, kept, filtered by reason), throughput, the filters,
                            and with the ct2 engine its agreement with HF beam search on a sample of the sources

The *teacher score* of a translation is its mean log-probability per target token under the teacher at
temperature 1, teacher-forced on the translation itself (every generated token up to and including the first
end-of-sentence token): ``(1 / |y|) * sum_t log p_teacher(y_t | y_<t, x)``, always <= 0.

Generation is resumable: each shard holds a fixed range of sources, its batches are formed inside the shard (sorted
by source length, cut by a token budget) and sampling is seeded per shard, and it is written to a temporary file and
renamed into place (``os.replace``) once complete. An interrupted run leaves only whole shards; a rerun continues from
the first missing one and ends with the same files an uninterrupted run writes. A corpus whose fingerprint does not
match the run's sources, tokenizer, teacher or generation settings is refused (:class:`LabelsError`), never reused.

The teacher decodes with Hugging Face ``generate`` (``seqkd.engine`` hf) or, converted to CTranslate2, with its beam
search (ct2: :meth:`~distilmt.models.translators.Ct2Translator.translate_scored`, same batching, settings and score
definition). The engine and, for ct2, the quantization are generation settings: labels of one engine are never
completed or reused by the other. A CT2 corpus records in ``stats.json`` how often its labels equal the HF teacher's
beam output on ``seqkd.agreement_sources`` sampled sources, and their mean absolute score difference.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from transformers import AutoTokenizer

from ..config.sections import SeqKDConfig
from ..data.prompt import TranslationPrompt
from ..data.readers import read_tsv, write_tsv
from ..data.store import TextSplit
from ..data.text import repeated_trigrams
from ..errors import LabelsError
from ..models.generation import translate_scored
from ..models.translators import CausalTranslator, Ct2Translator
from ..ranks import local_device
from ..rundir import atomic_open, check_fingerprint, sources_fingerprint

log = logging.getLogger(__name__)

FORMAT = "distilmt-distilled/1"
MANIFEST, STATS, TRAIN, NBEST = "manifest.json", "stats.json", "train.tsv", "nbest.jsonl"
GENERATION_KEYS = ("num_beams", "length_penalty", "max_new_tokens", "do_sample", "top_p", "temperature", "seed",
                   "num_return_sequences", "batch_tokens", "shard_size")
FILTER_KEYS = ("min_length_ratio", "max_length_ratio", "min_score", "max_repetition")
FILTER_REASONS = ("empty", "length_ratio", "score", "repetition")


# -- fingerprint --------------------------------------------------------------------------------------


def generation_settings(cfg: SeqKDConfig) -> dict:
    """The settings that decide the generated shards (filters and training choices do not).

    ``cfg.engine`` must be resolved (hf or ct2, not auto): ct2 adds the engine and its quantization; an HF corpus has
    the settings (and fingerprint) it had before there was a choice of engine."""
    settings = {key: getattr(cfg, key) for key in GENERATION_KEYS}
    if cfg.engine == "ct2":
        settings.update(engine="ct2", ct2_quantization=cfg.ct2_quantization)
    return settings


def labels_fingerprint(sources: Sequence[str], tokenizer_id: str, teacher_id: str, cfg: SeqKDConfig) -> dict:
    settings = generation_settings(cfg)
    return {"sources": sources_fingerprint(sources), "tokenizer": tokenizer_id, "teacher": teacher_id,
            "generation": hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()}


_WHAT = {"sources": "other training sources", "tokenizer": "another tokenizer", "teacher": "another teacher"}


def check_manifest(out_dir: Path, expected: dict, cfg: SeqKDConfig, rebuild_hint: str) -> None:
    """Refuse a distilled corpus made from anything else than what it is used with now."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise LabelsError(f"{path}: unreadable manifest; {rebuild_hint}") from None
    stored = manifest.get("fingerprint", {})
    check_fingerprint(out_dir, stored, expected, _WHAT, LabelsError, "distilled corpus", rebuild_hint)
    if stored.get("generation") != expected["generation"]:
        was, now = manifest.get("settings", {}), generation_settings(cfg)
        defaults = {"engine": "hf"}  # a corpus without an engine setting was made by HF generate
        changed = next((f"seqkd.{k}: {was.get(k, defaults.get(k))!r} there, {now.get(k, defaults.get(k))!r} now"
                        for k in (*now, *(k for k in was if k not in now))
                        if was.get(k, defaults.get(k)) != now.get(k, defaults.get(k))), "generation settings")
        raise LabelsError(f"{out_dir}: this distilled corpus was generated with other settings ({changed}); "
                          f"{rebuild_hint}")


# -- generation ---------------------------------------------------------------------------------------
def shard_name(index: int) -> str:
    return f"shard-{index:05d}.tsv"


def build_distilled(out_dir: str | Path, sources: Sequence[str], tokenizer, load_teacher: Callable[[], object],
                    cfg: SeqKDConfig, fingerprint: dict, rebuild_hint: str = "delete the directory and run again",
                    on_shard: Callable[[int, int, dict], None] | None = None,
                    reference: Callable[[], object] | None = None) -> dict:
    """Write (or complete) the distilled corpus in ``out_dir``; returns its stats.

    ``load_teacher()`` gives the teacher: a seq2seq model, a :class:`CausalTranslator` or, for ``cfg.engine`` ct2,
    a :class:`Ct2Translator`; it is called only when a shard is missing. ``on_shard(done, total, info)`` is called
    after each shard written now (``info``: sentences, seconds, sentences_per_s). ``reference()``, when given, gives
    the HF seq2seq teacher that :func:`label_agreement` compares the labels with (stats ``agreement``). A complete
    corpus made with the same fingerprint is not regenerated; only ``train.tsv`` is reassembled when the filters
    changed. A stale one is refused (:class:`LabelsError`).

    One process: :func:`write_label_shards` of every shard, then :func:`assemble_distilled`. Several processes
    call the first with their own ``shards`` and one of them the second once all are done.
    """
    stats = complete_stats(out_dir, cfg, fingerprint, rebuild_hint)
    if stats is not None:
        return stats
    generated, seconds = write_label_shards(out_dir, sources, tokenizer, load_teacher, cfg, fingerprint,
                                            rebuild_hint, on_shard)
    return assemble_distilled(out_dir, sources, tokenizer, cfg, generated, seconds, reference)


def complete_stats(out_dir: str | Path, cfg: SeqKDConfig, fingerprint: dict, rebuild_hint: str) -> dict | None:
    """The stats of a complete corpus in ``out_dir`` made as asked (filters included), else None; a stale corpus is
    refused (:class:`LabelsError`)."""
    out_dir = Path(out_dir)
    check_manifest(out_dir, fingerprint, cfg, rebuild_hint)
    stats_path = out_dir / STATS
    if stats_path.is_file():
        stats = json.loads(stats_path.read_text(encoding="utf-8"))
        if stats.get("filters") == _filters(cfg):
            return stats
    return None


def write_label_shards(out_dir: str | Path, sources: Sequence[str], tokenizer, load_teacher: Callable[[], object],
                       cfg: SeqKDConfig, fingerprint: dict, rebuild_hint: str = "delete the directory and run again",
                       on_shard: Callable[[int, int, dict], None] | None = None,
                       shards: slice = slice(None)) -> tuple[int, float]:
    """Write the missing shards among ``range(n_shards)[shards]`` (default all) and the manifest; returns (sentences
    translated now, seconds spent translating). Each shard depends only on its sources and its index (the sampling
    seed), so processes writing disjoint selections at once (``shards=slice(rank, None, world_size)``, see
    :mod:`distilmt.ranks`) make the same files as one process. A stale corpus is refused (:class:`LabelsError`)."""
    out_dir = Path(out_dir)
    check_manifest(out_dir, fingerprint, cfg, rebuild_hint)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_shards = max(1, -(-len(sources) // cfg.shard_size))
    if not (out_dir / MANIFEST).is_file():  # every process writes the same one, atomically
        with atomic_open(out_dir / MANIFEST) as f:
            json.dump({"format": FORMAT, "fingerprint": fingerprint, "settings": generation_settings(cfg),
                       "n_sources": len(sources), "n_shards": n_shards}, f, indent=1)
    missing = [i for i in range(n_shards)[shards] if not (out_dir / shard_name(i)).is_file()]
    generated, seconds = 0, 0.0
    if not missing:
        return generated, seconds
    teacher = load_teacher()
    if isinstance(teacher, Ct2Translator) != (cfg.engine == "ct2"):
        raise ValueError(f"seqkd.engine={cfg.engine!r} does not match the teacher loaded "
                         f"({type(teacher).__name__})")
    log.info("generate-labels: %d of %d shards to translate (%d sources, beam %d%s, %s)", len(missing), n_shards,
             len(sources), cfg.num_beams, ", sampling" if cfg.do_sample else "",
             f"CTranslate2 {cfg.ct2_quantization}" if cfg.engine == "ct2" else "HF generate")
    for index in missing:
        chunk = sources[index * cfg.shard_size:(index + 1) * cfg.shard_size]
        started = time.perf_counter()
        seed = cfg.seed * 1_000_003 + index
        if isinstance(teacher, (CausalTranslator, Ct2Translator)):  # a causal LM prompts itself; CT2 decodes
            hyps = teacher.translate_scored(chunk, cfg, seed=seed)
        else:
            hyps = translate_scored(teacher, tokenizer, chunk, cfg, seed=seed)
        took = time.perf_counter() - started
        if cfg.num_return_sequences > 1:
            with atomic_open(out_dir / shard_name(index).replace(".tsv", ".nbest.jsonl")) as f:
                for offset, (source, nbest) in enumerate(zip(chunk, hyps)):
                    f.write(json.dumps({"index": index * cfg.shard_size + offset, "source": source,
                                        "hypotheses": [{"text": t, "score": round(s, 6)} for t, s in nbest]},
                                       ensure_ascii=False) + "\n")
        write_tsv(((s, h[0][0], f"{h[0][1]:.6f}") for s, h in zip(chunk, hyps)), out_dir / shard_name(index))
        generated, seconds = generated + len(chunk), seconds + took
        info = {"sentences": len(chunk), "seconds": took, "sentences_per_s": len(chunk) / max(took, 1e-9)}
        log.info("generate-labels: shard %d/%d written (%d sentences, %.1f sentences/s)", index + 1, n_shards,
                 len(chunk), info["sentences_per_s"])
        if on_shard is not None:
            on_shard(index + 1, n_shards, info)
    return generated, seconds


def assemble_distilled(out_dir: str | Path, sources: Sequence[str], tokenizer, cfg: SeqKDConfig, generated: int = 0,
                       seconds: float = 0.0, reference: Callable[[], object] | None = None) -> dict:
    """``train.tsv`` (and ``nbest.jsonl``) from the written shards, the agreement check (with ``reference``) and
    ``stats.json`` (last); returns the stats. ``generated`` sentences were translated now in ``seconds`` (with
    several processes: their sum, and the longest one's time). A corpus already assembled with these filters is
    returned as it is."""
    out_dir = Path(out_dir)
    stats_path = out_dir / STATS
    if stats_path.is_file() and not generated:
        old = json.loads(stats_path.read_text(encoding="utf-8"))
        if old.get("filters") == _filters(cfg):
            return old
    n_shards = max(1, -(-len(sources) // cfg.shard_size))
    stats = _assemble(out_dir, sources, cfg, n_shards)
    old = json.loads(stats_path.read_text(encoding="utf-8")) if stats_path.is_file() and not generated else {}
    if generated:
        stats.update(generated_now=generated, seconds=round(seconds, 2),
                     sentences_per_s=round(generated / max(seconds, 1e-9), 2))
        log.info("generate-labels: %d sentences in %.1fs, %.1f sentences/s", generated, seconds,
                 stats["sentences_per_s"])
    else:  # reassembled for new filters: keep the throughput of the generation
        stats.update({k: old[k] for k in ("generated_now", "seconds", "sentences_per_s") if k in old})
    if "agreement" in old:
        stats["agreement"] = old["agreement"]
    elif reference is not None and cfg.agreement_sources:
        stats["agreement"] = label_agreement(out_dir, sources, tokenizer, reference(), cfg, n_shards)
    with atomic_open(stats_path) as f:
        json.dump(stats, f, indent=1)
    return stats


def agreement_sample(n_sources: int, size: int) -> list[int]:
    """``size`` indices spread evenly over ``range(n_sources)`` (all of them when there are not more)."""
    if size >= n_sources:
        return list(range(n_sources))
    return [i * n_sources // size for i in range(size)]


def label_agreement(out_dir: Path, sources: Sequence[str], tokenizer, model, cfg: SeqKDConfig,
                    n_shards: int) -> dict:
    """How the corpus's labels compare with the HF seq2seq ``model``'s beam output (the same settings) on the
    :func:`agreement_sample` of ``cfg.agreement_sources`` sources: the share of identical labels and the mean
    absolute difference between the two engines' teacher scores of their labels (over every sampled source, and
    over the identical labels alone: there only quantization differs)."""
    rows = [row for i in range(n_shards) for row in read_tsv(Path(out_dir) / shard_name(i), columns=3)]
    indices = agreement_sample(len(rows), cfg.agreement_sources)
    started = time.perf_counter()
    hf = translate_scored(model, tokenizer, [sources[i] for i in indices], cfg, seed=cfg.seed)
    same, diffs, same_diffs = 0, [], []
    for i, nbest in zip(indices, hf):
        (text, score), (_, label, stored) = nbest[0], rows[i]
        diff = abs(float(stored) - score)
        diffs.append(diff)
        if text == label:
            same += 1
            same_diffs.append(diff)
    agreement = {"against": "hf", "sources": len(indices), "exact_match": round(same / max(len(indices), 1), 4),
                 "mean_abs_score_diff": round(sum(diffs) / max(len(diffs), 1), 6),
                 "mean_abs_score_diff_identical": round(sum(same_diffs) / max(len(same_diffs), 1), 6),
                 "seconds": round(time.perf_counter() - started, 2)}
    log.info("generate-labels: agreement with HF beam search on %d sampled sources: %.1f%% identical labels, mean "
             "|score difference| %.4f (%.4f on the identical ones)", agreement["sources"],
             100 * agreement["exact_match"], agreement["mean_abs_score_diff"],
             agreement["mean_abs_score_diff_identical"])
    return agreement


def _filters(cfg: SeqKDConfig) -> dict:
    return {key: getattr(cfg, key) for key in FILTER_KEYS}


def filter_reason(source: str, label: str, score: float, cfg: SeqKDConfig) -> str | None:
    """Why a distilled pair is dropped (one of :data:`FILTER_REASONS`), or None when it is kept.

    The length ratio is target words / source words; repetition is the label's share of repeated word trigrams
    (a teacher's "the son of the son of ..." loop); each pair counts under the first filter it fails.
    """
    if not label.strip():
        return "empty"
    ratio = len(label.split()) / max(1, len(source.split()))
    too_short = cfg.min_length_ratio and ratio < cfg.min_length_ratio
    if too_short or (cfg.max_length_ratio and ratio > cfg.max_length_ratio):
        return "length_ratio"
    if cfg.min_score is not None and score < cfg.min_score:
        return "score"
    if cfg.max_repetition and (repeated_trigrams(label) or 0.0) > cfg.max_repetition:
        return "repetition"
    return None


def _assemble(out_dir: Path, sources: Sequence[str], cfg: SeqKDConfig, n_shards: int) -> dict:
    """train.tsv (and nbest.jsonl) from the shards in corpus order, with the filters applied; the counts."""
    kept, filtered, scores = [], dict.fromkeys(FILTER_REASONS, 0), []
    rows = [row for i in range(n_shards) for row in read_tsv(out_dir / shard_name(i), columns=3)]
    if [row[0] for row in rows] != list(sources):
        raise LabelsError(f"{out_dir}: the shards do not hold the run's training sources in order; "
                          "delete the directory (or pass --rebuild) and generate again")
    for source, label, score in rows:
        scores.append(float(score))
        reason = filter_reason(source, label, float(score), cfg)
        if reason is None:
            kept.append((source, label))
        else:
            filtered[reason] += 1
    write_tsv(kept, out_dir / TRAIN)
    if cfg.num_return_sequences > 1:
        with atomic_open(out_dir / NBEST) as f:
            for i in range(n_shards):
                f.write((out_dir / shard_name(i).replace(".tsv", ".nbest.jsonl")).read_text(encoding="utf-8"))
    log.info("generate-labels: %d of %d pairs kept (filtered: %d empty, %d by length ratio, %d by teacher score, %d "
             "repeating themselves)", len(kept), len(rows), *filtered.values())
    return {"format": FORMAT, "sources": len(rows), "kept": len(kept), "filtered": filtered,
            "filtered_total": sum(filtered.values()), "mean_score": round(sum(scores) / max(len(scores), 1), 4),
            "filters": _filters(cfg)}


def read_distilled(out_dir: str | Path) -> TextSplit:
    """The kept (source, teacher translation) pairs of a complete distilled corpus, in corpus order: a lazy
    :class:`~distilmt.data.store.TextSplit`, so a student trains on it from its memory-mapped token store."""
    out_dir = Path(out_dir)
    if not (out_dir / STATS).is_file():
        raise LabelsError(f"{out_dir}: no complete distilled corpus; run `distilmt generate-labels` first")
    return TextSplit(out_dir / TRAIN)


def training_pairs(original: Sequence[tuple[str, str]], distilled: Sequence[tuple[str, str]], train_on: str,
                   mix_ratio: float = 1.0, seed: int = 0) -> Sequence[tuple[str, str]]:
    """What student-seqkd learns from (``seqkd.train_on``).

    * ``original``: the reference pairs as they are;
    * ``distilled``: the kept teacher translations;
    * ``mix``: every original pair, followed by a seeded random sample of ``round(mix_ratio * len(distilled))``
      distilled pairs (in corpus order); ``mix_ratio = 1`` gives both full sets (a source then appears twice,
      once with its reference and once with the teacher's translation).
    """
    if train_on == "original":
        return original
    if train_on == "distilled":
        return distilled
    if train_on != "mix":
        raise ValueError(f"train_on={train_on!r}: expected original, distilled or mix")
    count = round(mix_ratio * len(distilled))
    chosen = sorted(random.Random(seed).sample(range(len(distilled)), count))
    return list(original) + [distilled[i] for i in chosen]


def labels_teacher(cfg, teacher_dir: str | Path, teacher_id: str):
    """``(teacher_id, load)`` for :func:`build_distilled` with a causal-LM teacher: the id gains
    the prompt's fingerprint (another prompt makes other labels), ``load()`` gives a :class:`CausalTranslator` where
    ``teacher.device`` says (default: the GPU when there is one), weights as ``teacher.inference_dtype`` says. ``cfg`` is the run's :class:`~distilmt.config.RunConfig`."""

    prompt = TranslationPrompt.from_config(AutoTokenizer.from_pretrained(str(teacher_dir)), cfg.prompt, cfg.data)

    def load() -> CausalTranslator:  # where teacher.device says (default: this rank's GPU when there is one)
        device = cfg.teacher.device or local_device()
        return CausalTranslator.load(teacher_dir, cfg.prompt.template, cfg.data.source_lang, cfg.data.target_lang,
                                     device, cfg.teacher.inference_dtype)

    return f"{teacher_id}+prompt:{prompt.fingerprint()}", load
