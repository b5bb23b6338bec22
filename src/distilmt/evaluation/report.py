"""report.md and a self-contained report.html (plots embedded as base64 PNG) for a run or a comparison."""

from __future__ import annotations

import base64
import html
import io
import json
from itertools import groupby
from pathlib import Path

from .compare import column_cell, columns, semantic_note, set_notes, speed_note, test_set_names, to_markdown


def training_curves(tb_root: Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{model: {tag: [(step, value), ...]}} read back from the TensorBoard event files of a run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curves: dict[str, dict[str, list[tuple[int, float]]]] = {}
    if not tb_root.is_dir():
        return curves
    for model_dir in sorted(p for p in tb_root.iterdir() if p.is_dir()):
        events = EventAccumulator(str(model_dir), size_guidance={"scalars": 0}).Reload()
        curves[model_dir.name] = {tag: [(s.step, s.value) for s in events.Scalars(tag)]
                                  for tag in events.Tags().get("scalars", [])}
    return curves


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated by another (higher x is better, higher y is better)."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((x2 >= x and y2 >= y) and (x2 > x or y2 > y) for x2, y2 in points):
            front.append(i)
    return front


def png_data_uri(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def plot_curves(curves: dict) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("train/loss", "total loss"), ("train/ce", "cross-entropy (reference)"), ("train/kd", "KD term (T² KL)"),
              ("eval/bleu", "dev BLEU"), ("monitor/laziness", "monitor laziness")]
    panels = [(tag, title) for tag, title in panels if any(tag in c for c in curves.values())]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (tag, title) in zip(axes[0], panels):
        for model, tags in curves.items():
            if tag in tags and tags[tag]:
                steps, values = zip(*tags[tag])
                ax.plot(steps, values, marker="o" if tag == "eval/bleu" else None, markersize=3, label=model)
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return png_data_uri(fig)


def plot_tradeoffs(rows: list[dict]) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.get("bleu") is not None]
    if not rows:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label, invert in ((axes[0], "params", "parameters, millions (fewer is better)", True),
                                   (axes[1], "sentences_per_s", "sentences / s (more is better)", False)):
        usable = [r for r in rows if r.get(key)]
        if not usable:
            ax.set_visible(False)
            continue
        scale = 1e6 if key == "params" else 1.0
        xs = [float(r[key]) / scale for r in usable]
        ys = [float(r["bleu"]) for r in usable]
        healthy = [i for i, r in enumerate(usable) if not r.get("collapsed")]  # a collapsed model is no option
        front = {healthy[j] for j in pareto_front([(-xs[i] if invert else xs[i], ys[i]) for i in healthy])}
        for i, r in enumerate(usable):
            colour = "crimson" if r.get("collapsed") else ("tab:green" if i in front else "tab:blue")
            ax.scatter(xs[i], ys[i], s=60, color=colour, zorder=3)
            ax.annotate(r["name"], (xs[i], ys[i]), textcoords="offset points", xytext=(5, 5), fontsize=8)
        ordered = sorted((xs[i], ys[i]) for i in front)
        if len(ordered) > 1:
            ax.plot(*zip(*ordered), color="tab:green", linestyle="--", alpha=0.6, label="Pareto front")
            ax.legend(fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel("test BLEU")
        ax.grid(alpha=0.3)
    axes[0].set_title("quality vs size")
    axes[1].set_title("quality vs speed")
    fig.tight_layout()
    return png_data_uri(fig)


def sample_rows(run_dir: Path, n: int) -> tuple[list[str], list[list[str]]]:
    path = run_dir / "translations.json"
    if not path.is_file():
        return [], []
    data = json.loads(path.read_text(encoding="utf-8"))
    names = list(data["hypotheses"])
    header = ["source", "reference", *names]
    rows = []
    for i in range(min(n, len(data["sources"]))):
        rows.append([data["sources"][i], data["references"][i], *[data["hypotheses"][m][i] for m in names]])
    return header, rows


def monitor_history(run_dir: Path, per_model: int = 6) -> list[tuple[str, dict]]:
    """The first monitored sample's records (spread over training) for each student the monitor watched."""
    rows = []
    for path in sorted((run_dir / "monitor").glob("*.json")):
        records = [r for r in json.loads(path.read_text(encoding="utf-8"))["history"] if r["sample"] == 0]
        if records:
            picks = sorted({round(i * (len(records) - 1) / max(per_model - 1, 1)) for i in range(per_model)})
            rows += [(path.stem, records[i]) for i in picks]
    return rows


def _history_intro(history: list[tuple[str, dict]]) -> list[str]:
    first = history[0][1]
    return [f"Source: {first['source']}", f"Reference: {first['reference']}", f"Teacher: {first['teacher']}"]


def _collapsed_where(row: dict) -> str:
    """The model's name, with the test sets it collapsed on when there are several."""
    sets = [name for name, scores in (row.get("test_sets") or {}).items() if scores.get("collapsed")]
    return f"{row['name']} (on {', '.join(sets)})" if len(row.get("test_sets") or {}) > 1 and sets else row["name"]


def _results_table(rows: list[dict]) -> str:
    """The results as an HTML table; with several test sets a first header row names each set over its columns."""
    shown = columns(rows)
    head = ""
    if any(c.test_set for c in shown):  # consecutive columns of one set share a cell naming it
        groups = [(name, len(list(group))) for name, group in groupby(c.test_set or "" for c in shown)]
        head = "<tr>" + "".join(f"<th colspan='{n}'>{html.escape(name)}</th>" for name, n in groups) + "</tr>"
    head += "<tr>" + "".join(f"<th>{html.escape(c.header)}</th>" for c in shown) + "</tr>"
    body = "".join(("<tr class='bad'>" if r.get("collapsed") else "<tr>")
                   + "".join(f"<td>{html.escape(column_cell(r, c))}</td>" for c in shown) + "</tr>" for r in rows)
    return f"<table class='results'>{head}{body}</table>"


def kd_verdict(metrics: dict) -> str | None:
    """One sentence from metrics.json's ``kd_vs_baseline``: KD against its no-KD twin, and whether the difference
    is more than test-set luck (paired bootstrap; "higher"/"lower" only when 95 % of the resamples agree; a tie
    — identical translations — is "level", never "lower")."""
    test = metrics.get("kd_vs_baseline")
    if not test:
        return None
    bleu, chrf = test["bleu"], test["chrf"]
    share, worse = bleu["system_better"], bleu.get("system_worse", 1 - bleu["system_better"])
    verdict = ("higher, beyond test-set noise" if share >= 0.95 else "lower, beyond test-set noise" if worse >= 0.95
               else "level with its twin: the same translations" if share == worse == 0
               else "level with its twin within this test set's noise")
    low, high = bleu["ci95"]
    return (f"KD vs its no-KD twin: BLEU {bleu['system']:.2f} vs {bleu['baseline']:.2f} ({bleu['delta']:+.2f}, 95 % "
            f"interval {low:+.2f} to {high:+.2f}), chrF {chrf['delta']:+.2f}; student-kd scores higher in {share:.0%} "
            f"and lower in {worse:.0%} of {test['n_samples']} paired bootstrap resamples of the {test['sentences']} test sentences: {verdict}.")


def write_report(run_dir: str | Path, cfg=None, title: str = "distilmt report", metrics_file: str = "metrics.json") -> Path:
    """Write report.md (tables, sample translations, plots as files) and report.html (self-contained)."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / metrics_file
    metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else {"models": []}
    rows = metrics["models"]
    curves = training_curves(run_dir / "tb")
    images = {"training curves": plot_curves(curves), "quality vs size and speed": plot_tradeoffs(rows)}
    images = {k: v for k, v in images.items() if v}
    n_samples = getattr(getattr(cfg, "eval", None), "samples_in_report", 8)
    header, samples = sample_rows(run_dir, n_samples)

    md = [f"# {title}", ""]
    if cfg is not None:
        md += [f"Preset **{cfg.name}**, direction **{cfg.data.direction}**, corpus `{cfg.data.corpus}`.", ""]
    collapsed = [_collapsed_where(r) for r in rows if r.get("collapsed")]
    if collapsed:
        md += [f"**Warning: collapsed model(s): {', '.join(collapsed)}** — the same few outputs for most inputs.", ""]
    sets = test_set_names(rows)
    heading = f"Results on {len(sets)} test sets: {', '.join(sets)}" if len(sets) > 1 else "Results on the test set"
    md += [f"## {heading}", "", to_markdown(rows), ""]
    verdict = kd_verdict(metrics)
    if verdict:
        md += [f"**{verdict}**", ""]
    signature = next((r.get("bleu_signature") for r in rows if r.get("bleu_signature")), None)
    if signature:
        md += [f"sacrebleu: `{signature}`", ""]
    for note in filter(None, (semantic_note(rows), speed_note(rows))):
        md += [note, ""]
    md += [f"- {note}" for note in set_notes(rows)] + ([""] if set_notes(rows) else [])
    for name, data in images.items():
        file = run_dir / f"report-{name.replace(' ', '-')}.png"
        file.write_bytes(base64.b64decode(data))
        md += [f"## {name.capitalize()}", "", f"![{name}]({file.name})", ""]
    if samples:
        md += ["## Sample translations", "", "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        md += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in samples]
        md.append("")
    history = monitor_history(run_dir)
    if history:
        md += ["## Monitor: one dev verse across training", "", *_history_intro(history), "",
               "| model | step | epoch | laziness | student translation |", "|---|---:|---:|---:|---|"]
        md += [f"| {m} | {r['step']} | {r['epoch']:.2f} | {r['laziness']:.2f} | {r['student'].replace('|', '/')} |"
               for m, r in history]
        md.append("")
    (run_dir / "report.md").write_text("\n".join(md), encoding="utf-8")

    parts = [f"<h1>{html.escape(title)}</h1>"]
    if cfg is not None:
        parts.append(f"<p>Preset <b>{html.escape(cfg.name)}</b>, direction <b>{cfg.data.direction}</b>.</p>")
    if collapsed:
        parts.append(f"<p class='bad'>Collapsed model(s): {html.escape(', '.join(collapsed))}</p>")
    parts.append(f"<h2>{html.escape(heading)}</h2><div class='wide'>{_results_table(rows)}</div>")
    if verdict:
        parts.append(f"<p><b>{html.escape(verdict)}</b></p>")
    if signature:
        parts.append(f"<p>sacrebleu: <code>{html.escape(signature)}</code></p>")
    for note in filter(None, (semantic_note(rows), speed_note(rows))):
        parts.append(f"<p>{html.escape(note)}</p>")
    if set_notes(rows):
        parts.append("<ul>" + "".join(f"<li>{html.escape(note)}</li>" for note in set_notes(rows)) + "</ul>")
    for name, data in images.items():
        parts.append(f"<h2>{html.escape(name.capitalize())}</h2><img alt='{html.escape(name)}' "
                     f"src='data:image/png;base64,{data}'>")
    if samples:
        parts.append("<h2>Sample translations</h2><table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in samples]
        parts.append("</table>")
    if history:
        parts.append("<h2>Monitor: one dev verse across training</h2>"
                     + "".join(f"<p>{html.escape(line)}</p>" for line in _history_intro(history))
                     + "<table><tr><th>model</th><th>step</th><th>epoch</th><th>laziness</th>"
                     "<th>student translation</th></tr>")
        parts += [f"<tr><td>{html.escape(m)}</td><td>{r['step']}</td><td>{r['epoch']:.2f}</td>"
                  f"<td>{r['laziness']:.2f}</td><td>{html.escape(r['student'])}</td></tr>" for m, r in history]
        parts.append("</table>")
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}"
             ".results td{text-align:right}.results td:first-child{text-align:left;white-space:nowrap}"
             ".results td:nth-child(2){text-align:left}.wide{overflow-x:auto}"
             ".bad{color:#c00;font-weight:bold}img{max-width:100%}")
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>" \
           f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"
    out = run_dir / "report.html"
    out.write_text(page, encoding="utf-8")
    return run_dir / "report.md"
