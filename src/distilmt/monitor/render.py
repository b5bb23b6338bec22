"""How the monitor shows what it measured: text helpers, ``rich`` panels, plain lines, TensorBoard markdown.

Everything here builds text (or a ``rich`` renderable) from records and summaries; printing it is the
callback's job.
"""

from __future__ import annotations

import difflib

from rich.console import Group
from rich.panel import Panel
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from .messages import LABELS, TRENDS, band
from .scores import mean
from .topics import topic_name

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


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _topics_text(pairs: list[tuple[str, int]], language: str) -> str:
    return ", ".join(f"{topic_name(t, language)} {c}" for t, c in pairs) or "n/a"


def bar(value: float, language: str = "en", width: int = 20) -> Text:
    """A bar of ``width`` cells filled to ``value``, its percentage and band label, in the band's colour."""
    colour, label = band(value, language)
    filled = int(round(min(1.0, max(0.0, value)) * width))
    return Text.assemble(("█" * filled, colour), ("░" * (width - filled), "dim"), f" {value:4.0%}  ",
                         (label, colour))


def diff_text(student: str, teacher: str, max_chars: int) -> Text:
    """:func:`word_diff` coloured: student-only words struck through in red, teacher-only underlined green."""
    text = Text()
    for op, words in word_diff(student, teacher):
        if text:
            text.append(" ")
        text.append(words, style={"equal": "", "delete": "red strike", "insert": "green underline"}[op])
    text.truncate(max_chars, overflow="ellipsis")
    return text


def sample_panel(records: list[dict], language: str, max_chars: int, show_diff: bool) -> Panel:
    """One panel for the records of one step: each sample's texts, diff, laziness bar and comment."""
    labels = LABELS[language]
    first = records[0]
    loss = first["loss"]
    n, cut = len(records), max_chars
    parts = []
    for r in records:
        if parts:
            parts.append(Rule(style="dim"))
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column(overflow="fold")
        grid.add_row(f"{labels['sample']} {r['sample'] + 1}/{n}",
                     Text(f"{labels['topic']}: {topic_name(r['topic'], language)}", style="cyan"))
        grid.add_row(labels["source"], Text(shown(r["source"], cut)))
        grid.add_row(labels["teacher"], Text(shown(r["teacher"], cut)))
        grid.add_row(labels["student"], Text(shown(r["student"], cut), style="bold"))
        grid.add_row(labels["reference"], Text(shown(r["reference"], cut), style="dim"))
        if show_diff:
            grid.add_row(labels["diff"], diff_text(r["student"], r["teacher"], 2 * cut))
        grid.add_row(labels["laziness"], bar(r["laziness"], language))
        kl = "n/a" if r["kl"] is None else f"{r['kl']:.3f} nats/token, normalised {r['kl_norm']:.2f}"
        grid.add_row("", Text(f"{labels['similarity']} {r['similarity']:.2f} · KL {kl}", style="dim"))
        grid.add_row(labels["comment"], Text(r["comment"], style=r["colour"]))
        parts.append(grid)
    epoch = "" if first["epoch"] is None else f" · {labels['epoch']} {first['epoch']:.2f}"
    loss_text = "" if loss is None else f" · {labels['loss']} {loss:.4f}"
    mean_colour, _ = band(mean(r["laziness"] for r in records))
    title = f"{labels['title']} · {labels['step']} {first['step']}{epoch}{loss_text}"
    return Panel(Group(*parts), title=title, title_align="left", border_style=mean_colour)


def sample_line(r: dict, n_samples: int, max_chars: int, show_diff: bool) -> str:
    """One plain line for one record (for CI, log files and ``monitor.quiet``)."""
    cut = max_chars
    kl = "n/a" if r["kl"] is None else f"{r['kl']:.3f}"
    kl_norm = "n/a" if r["kl_norm"] is None else f"{r['kl_norm']:.3f}"
    epoch = "n/a" if r["epoch"] is None else f"{r['epoch']:.2f}"
    fields = [
        f"[monitor] step={r['step']} epoch={epoch} sample={r['sample'] + 1}/{n_samples}",
        f"topic={r['topic']!r} laziness={r['laziness']:.3f} band={r['colour']} similarity={r['similarity']:.3f}",
        f"kl={kl} kl_norm={kl_norm} loss={_fmt(r['loss'], 4)}",
        f"| source: {shown(r['source'], cut)} | teacher: {shown(r['teacher'], cut)}",
        f"| student: {shown(r['student'], cut)} | reference: {shown(r['reference'], cut)}",
    ]
    if show_diff:
        fields.append(f"| diff: {shorten(plain_diff(r['student'], r['teacher']), 2 * cut)}")
    fields.append(f"| comment: {r['comment']}")
    return " ".join(fields)


def epoch_line(s: dict, language: str) -> str:
    """The plain line of an epoch summary."""
    return (f"[monitor] epoch {s['epoch']} summary: step={s['step']} samples_shown={s['samples_shown']} "
            f"mean_loss={_fmt(s['mean_loss'], 4)} mean_laziness={_fmt(s['mean_laziness'])} "
            f"topics: {_topics_text(s['top_topics'], language)}")


def epoch_panel(s: dict, language: str) -> Panel:
    """The box of an epoch summary: samples shown, mean loss and laziness, the most frequent topics."""
    labels = LABELS[language]
    rows = [(labels["samples_shown"], str(s["samples_shown"])), (labels["mean_loss"], _fmt(s["mean_loss"], 4)),
            (labels["mean_laziness"], "n/a" if s["mean_laziness"] is None else bar(s["mean_laziness"], language)),
            (labels["topics"], _topics_text(s["top_topics"], language))]
    title = f"{labels['epoch']} {s['epoch']} {labels['summary']} · {labels['step']} {s['step']}"
    return summary_panel(rows, title, s["mean_laziness"])


def summary_panel(rows: list[tuple[str, str]], title: str, laziness: float | None) -> Panel:
    """A two-column box (bold labels, values), bordered in the colour of ``laziness``'s band (blue without)."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for label, value in rows:
        grid.add_row(label, value)
    colour = "blue" if laziness is None else band(laziness)[0]
    return Panel(grid, title=title, title_align="left", border_style=colour)


def final_line(f: dict) -> str:
    """The plain line of the final summary."""
    return (f"[monitor] final: samples_shown={f['samples_shown']} panels={f['panels']} "
            f"overall_laziness={_fmt(f['overall_laziness'])} first={_fmt(f['first_laziness'])} "
            f"last={_fmt(f['last_laziness'])} trend={f['trend']} collapsed={f['collapsed']} "
            f"advice: {f['advice']}")


def final_panel(f: dict, language: str) -> Panel:
    """The final box: overall laziness, first and last, trend, collapse and advice."""
    labels = LABELS[language]
    rows = [(labels["samples_shown"], str(f["samples_shown"])),
            (labels["overall"], "n/a" if f["overall_laziness"] is None else bar(f["overall_laziness"], language)),
            (labels["first_last"], f"{_fmt(f['first_laziness'])} → {_fmt(f['last_laziness'])}"),
            (labels["trend"], TRENDS[language][f["trend"]])]
    if f["collapsed"]:
        rows.append((labels["collapsed"], "!"))
    rows.append((labels["advice"], f["advice"]))
    return summary_panel(rows, f"{labels['title']} · {labels['final']}", f["last_laziness"])


def markdown(r: dict) -> str:
    """One record as markdown, for TensorBoard's text tab."""
    kl = "n/a" if r["kl"] is None else f"{r['kl']:.3f} nats/token (normalised {r['kl_norm']:.3f})"
    rows = [("topic", r["topic"]), ("source", r["source"]), ("teacher", r["teacher"]), ("student", r["student"]),
            ("reference", r["reference"]),
            ("laziness", f"{r['laziness']:.3f} ({r['colour']}: {r['band']})"),
            ("similarity", f"{r['similarity']:.3f}"), ("KL", kl), ("comment", r["comment"])]
    return "  \n".join(f"**{k}:** {str(v).replace('|', '/')}" for k, v in rows)
