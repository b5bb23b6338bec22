"""The monitor as a ``transformers.TrainerCallback``: measure a few fixed samples every few steps, keep the
records and summaries, print panels or plain lines, and write TensorBoard scalars and texts."""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from transformers import TrainerCallback

from distilmt.config import MonitorConfig
from distilmt.data.prompt import TranslationPrompt
from distilmt.models.generation import generate_continuations, translate

from .messages import ADVICE, advice_key, band, comment
from .render import epoch_line, epoch_panel, final_line, final_panel, markdown, sample_line, sample_panel
from .scores import (
    LOW_LOSS,
    batch_kl,
    causal_batch_kl,
    collapse_suspected,
    laziness,
    mean,
    normalised_kl,
    output_problem,
    repetition,
    text_similarity,
    trend_of,
)
from .topics import classify_topic, merge_topics

logger = logging.getLogger(__package__)  # "distilmt.monitor", the name the monitor's log lines have always had


def greedy_translate(model, tokenizer, sources: list[str], max_new_tokens: int = 128,
                     generate_kwargs: dict | None = None, prompt: TranslationPrompt | None = None) -> list[str]:
    """Greedy translations of ``sources`` in one batch through the shared generation path, the length capped at
    ``2 * source tokens + 10`` (and ``max_new_tokens``) so a student that never emits ``</s>`` costs a bounded time.
    With a ``prompt`` the model is a causal LM: the continuations of its prompts, at most ``max_new_tokens``."""
    if prompt is not None:
        out = generate_continuations(model, prompt, sources, max_new_tokens=max_new_tokens, num_beams=1,
                                     do_sample=False)
        return [hyps[0][0] for hyps in out]
    return translate(model, tokenizer, sources, num_beams=1, batch_size=max(1, len(sources)),
                     max_new_tokens=max_new_tokens, relative_cap=True, **(generate_kwargs or {}))


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
        teacher_prompt, student_prompt: for a causal-LM teacher or student, how it is prompted to translate
            (:class:`~distilmt.data.prompt.TranslationPrompt`); None for a seq2seq model.
        shared_vocab: the real vocabulary two causal LMs share (token KD between them), so the KL is taken over
            it; 0 when they share none (a causal teacher and a seq2seq student, or two tokenizers): then laziness
            uses the text similarity alone.

    The student is the ``model`` the Trainer passes to callbacks. Translations are computed on every
    process (models sharded across processes need them all to take part); only the main process prints
    and writes TensorBoard.
    """

    def __init__(self, teacher, tokenizer, samples: list[tuple[str, str]], config: MonitorConfig,
                 log_dir: str | None = None, console=None, stream=None, max_new_tokens: int = 128,
                 generate_kwargs: dict | None = None, low_loss: float = LOW_LOSS,
                 teacher_prompt: TranslationPrompt | None = None, student_prompt: TranslationPrompt | None = None,
                 shared_vocab: int = 0):
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
        self.teacher_prompt, self.student_prompt, self.shared_vocab = teacher_prompt, student_prompt, shared_vocab
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
                                                   self.max_new_tokens, self.generate_kwargs, self.teacher_prompt)
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
        students = greedy_translate(student, self.tokenizer, sources, self._student_cap, self.generate_kwargs,
                                    self.student_prompt)
        try:
            kls, vocab = self._kl(student, sources, teachers)
        except (TypeError, ValueError) as exc:  # no distribution to compare with: text term only
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
                "comment": comment(value, loss, self.language, self.low_loss, output_problem(student_text),
                                   text_similarity(student_text, reference) if reference else None), "loss": loss,
                "repetition": repetition(student_text),
            })
        self.history.extend(records)
        self.panels.append({
            "step": int(step), "epoch": None if epoch is None else float(epoch), "loss": loss,
            "mean_laziness": mean(r["laziness"] for r in records),
            "collapsed": collapse_suspected(students, teachers),
        })
        return records

    def _kl(self, student, sources: list[str], teachers: list[str]) -> tuple[list[float], int]:
        """Per-sample KL(teacher || student) on the teacher's translations, and the vocabulary it was taken over."""
        if self.teacher_prompt is None and self.student_prompt is None:
            return batch_kl(self.teacher, student, self.tokenizer, sources, teachers)
        if self.teacher_prompt is not None and self.student_prompt is not None and self.shared_vocab:
            return causal_batch_kl(self.teacher, student, self.student_prompt, sources, teachers, self.shared_vocab)
        raise ValueError("the teacher and the student share no vocabulary")

    # -- statistics -----------------------------------------------------------------------------

    def _summarise(self, records: list[dict], epoch: int, step: int, losses: list[float]) -> dict:
        topics = Counter(r["topic"] for r in records)
        return {
            "epoch": epoch, "step": int(step), "samples_shown": len(records),
            "mean_loss": mean(losses) if losses else mean(r["loss"] for r in records),
            "mean_laziness": mean(r["laziness"] for r in records),
            "mean_similarity": mean(r["similarity"] for r in records),
            "mean_kl_norm": mean(r["kl_norm"] for r in records),
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
        latest = [r for r in self.history if self.panels and r["step"] == self.panels[-1]["step"]]
        off = [text_similarity(r["student"], r["reference"]) for r in latest if r["reference"]]
        key = advice_key(len(self.history), last, trend, collapsed,
                         far_from_reference=bool(off) and sum(off) / len(off) < 0.1)
        return {
            "samples_shown": len(self.history), "panels": len(self.panels),
            "overall_laziness": mean(r["laziness"] for r in self.history),
            "first_laziness": first, "last_laziness": last, "trend": trend,
            "collapsed": collapsed, "advice_key": key, "advice": ADVICE[self.language][key],
            "topics": dict(Counter(r["topic"] for r in self.history)),
        }

    def stats(self) -> dict:
        """Everything measured so far, JSON-serialisable: totals, trend, per-epoch and per-sample series."""
        final = self.final_summary or self._final()
        return {
            **final,
            "mean_similarity": mean(r["similarity"] for r in self.history),
            "mean_kl_norm": mean(r["kl_norm"] for r in self.history),
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

    def _plain(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def _show_panel(self, records: list[dict]) -> None:
        cut, show_diff = self.config.max_text_length, self.config.show_diff
        if not self.rich_output:
            for r in records:
                self._plain(sample_line(r, len(self.samples), cut, show_diff))
            return
        self.console.print(sample_panel(records, self.language, cut, show_diff))

    def _show_epoch(self, s: dict) -> None:
        line = epoch_line(s, self.language)
        if not self.rich_output:
            self._plain(line)
            return
        logger.info(line)  # the box is for the terminal; the run's log file keeps the summary too
        self.console.print(epoch_panel(s, self.language))

    def _show_final(self, f: dict) -> None:
        line = final_line(f)
        if not self.rich_output:
            self._plain(line)
            return
        logger.info(line)
        self.console.print(final_panel(f, self.language))

    # -- TensorBoard ----------------------------------------------------------------------------

    def _tb(self):
        if self._writer is None and self.log_dir:
            # lazy: only a monitor with a log_dir writes TensorBoard, and the import is slow
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(self.log_dir)
        return self._writer

    def _log_tensorboard(self, records: list[dict], step: int) -> None:
        writer = self._tb()
        if writer is None:
            return
        writer.add_scalar("monitor/laziness", mean(r["laziness"] for r in records), step)
        writer.add_scalar("monitor/text_similarity", mean(r["similarity"] for r in records), step)
        kl_norm = mean(r["kl_norm"] for r in records)
        if kl_norm is not None:
            writer.add_scalar("monitor/kl_normalised", kl_norm, step)
            writer.add_scalar("monitor/kl", mean(r["kl"] for r in records), step)
        for r in records:
            i = r["sample"]
            writer.add_scalar(f"monitor/sample_{i}/laziness", r["laziness"], step)
            writer.add_scalar(f"monitor/sample_{i}/text_similarity", r["similarity"], step)
            if r["kl_norm"] is not None:
                writer.add_scalar(f"monitor/sample_{i}/kl_normalised", r["kl_norm"], step)
            writer.add_text(f"monitor/sample_{i}", markdown(r), step)
        writer.flush()


def _latest_loss(log_history: list[dict]) -> float | None:
    for entry in reversed(log_history):
        if "loss" in entry:
            return float(entry["loss"])
    return None
