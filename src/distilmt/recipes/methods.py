"""The comparison of distillation methods: one teacher, the same student, data and updates, several seeds.

``distilmt methods`` (``make methods``) trains the run's teacher once (the ordinary teacher stage), then for
each seed the no-KD baseline and every selected method, each a student derived from the teacher exactly as
``student-kd`` is, and evaluates each on the test set (BLEU, chrF, TER, the collapse check; no speed grid).

    RUN_DIR/methods/NAME/        each row's student (NAME = METHOD-sSEED; checkpoints removed once evaluated)
    RUN_DIR/methods.json         {"models": [rows], "teacher": {...}, "settings": {...}}; rewritten after every row
    RUN_DIR/methods.md           per method: mean over seeds, each seed, difference to the baseline's mean
    RUN_DIR/methods.png          BLEU per method, one point per seed, the baseline's seed range as a band

A row already in methods.json with the same overrides is not trained again, so an interrupted study continues
where it stopped. What a method means is one line of :data:`METHODS`: the config overrides it applies.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import statistics
import time
from pathlib import Path

from rich.table import Table

from ..config.run import RunConfig, from_dict, set_override
from ..data.corpus import load_splits
from ..errors import ConfigError
from ..evaluation.compare import evaluate_models, write_json
from ..models.build import build_model
from ..rundir import atomic_open, is_complete, load_tokenizer, mark_complete
from ..training.loop import train_seq2seq
from . import stages
from .progressive import train_chain
from .stages import dev_subset
from .student import train_student

log = logging.getLogger(__name__)

# name -> config overrides on top of the run's config ("baseline": no teacher at all; "kd": the preset's KD as it is)
METHODS: dict[str, dict] = {
    "baseline": {},
    "kd": {},  # forward KL, the preset's alpha, beta and T (quick: KD and cross-entropy half and half)
    "kd_constant": {"distill.weight_schedule": "constant", "distill.alpha": 0.5, "distill.beta": 0.5,
                    "distill.alpha_final": None, "distill.beta_final": None, "distill.temperature": 2.0},  # the textbook mix, fixed over training
    "reverse_kl": {"distill.divergence": "reverse_kl"},
    "jsd": {"distill.divergence": "jsd", "distill.divergence_beta": 0.5},
    "skew_kl": {"distill.divergence": "skew_kl", "distill.divergence_beta": 0.1},
    "tvd": {"distill.divergence": "tvd"},
    "temp_schedule": {"distill.temperature": 4.0, "distill.temperature_schedule": "cosine",
                      "distill.temperature_final": 1.0},
    "weight_schedule": {"distill.alpha": 0.1, "distill.beta": 0.8, "distill.weight_schedule": "linear",
                        "distill.alpha_final": 0.3, "distill.beta_final": 0.6},
    "hidden": {"distill.hidden_weight": 1.0},
    "attention": {"distill.attention_weight": 1.0},
    "on_policy": {"distill.on_policy_ratio": 0.5},
    "ensemble": {"distill.teachers": ["{run_dir}/teacher", "{run_dir}/teacher-2"]},  # trains teacher-2 first
    "mutual": {"distill.mutual": True},
    "progressive": {"distill.progressive_factor": 0.7},
}
DEFAULT_METHODS = ("kd", "kd_constant", "reverse_kl", "temp_schedule", "hidden", "attention", "on_policy", "mutual", "progressive")
"""What ``make methods`` compares: every method family except the ensemble (its second teacher would cost
another teacher training) and the divergences/schedules that only differ from these by a setting."""

STUDY_OVERRIDES = {  # quality only: no speed grid, export, semantic model or monitor; no dev BLEU while training
    "eval.speed_sentences": 0, "eval.export_ct2": False, "eval.semantic": False, "monitor.enabled": False,
    "student_train.eval_every_epoch": False,
}


def parse_methods(text: str | None) -> list[str]:
    """``kd,reverse_kl`` -> the listed methods (in order, baseline left out: it is always trained)."""
    names = [n.strip() for n in (text or ",".join(DEFAULT_METHODS)).split(",") if n.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise ConfigError(f"--methods: '{unknown[0] if unknown else text}' is not a method; choose from "
                          f"{', '.join(METHODS)}")
    return [n for n in dict.fromkeys(names) if n != "baseline"]


def study_overrides(steps: int = 0, test_sentences: int = 0) -> list[str]:
    """The study's ``key=value`` overrides of the run config (``steps``/``test_sentences``: 0 = the preset's)."""
    items = dict(STUDY_OVERRIDES)
    if steps:
        items["student_train.max_steps"] = steps
    if test_sentences:
        items["data.max_test_sentences"] = test_sentences
    return [f"{k}={json.dumps(v)}" for k, v in items.items()]


def method_config(cfg: RunConfig, method: str, seed: int, run_dir: Path) -> RunConfig:
    """The run config with the method's overrides and ``student_train.seed = seed``. With ``distill.teacher_cache`` on,
    a method the cache cannot serve (reverse KL, hidden-state and attention matching, on-policy, ensembles,
    progressive chains: their configs are refused with the cache) learns from the live teacher instead (logged)."""
    overrides = {**METHODS[method], "student_train.seed": seed}
    try:
        return _with_overrides(cfg, overrides, run_dir)
    except ConfigError as exc:
        if not cfg.distill.teacher_cache or "teacher_cache" not in str(exc):
            raise
    log.info("methods: %s cannot read the teacher cache; it learns from the live teacher", method)
    return _with_overrides(cfg, {"distill.teacher_cache": False, **overrides}, run_dir)


def _with_overrides(cfg: RunConfig, overrides: dict, run_dir: Path) -> RunConfig:
    values = cfg.to_dict()
    for key, value in overrides.items():
        if isinstance(value, list):
            value = [v.format(run_dir=run_dir) for v in value]
        set_override(values, key, json.dumps(value))
    return from_dict(RunConfig, values)


def run_study(cfg: RunConfig, run_dir: str | Path, methods: list[str], seeds: list[int],
              resume: bool = False) -> list[dict]:
    """Teacher once, then per seed the baseline and each method: train, evaluate, write the outputs after each."""

    run_dir = Path(run_dir)
    stages.prepare_data(cfg, run_dir)
    stages.train_teacher(cfg, run_dir, resume=resume)
    if "ensemble" in methods:
        _second_teacher(cfg, run_dir, resume)
    splits = load_splits(run_dir / "data")
    test = stages.test_subset(cfg, splits)
    saved = _read(run_dir / "methods.json")
    teacher = saved.get("teacher") or _evaluate(cfg, "teacher", run_dir / "teacher", test)
    rows = {row["name"]: row for row in saved.get("models", [])}
    settings = {"methods": methods, "seeds": seeds, "student_updates": cfg.student_train.max_steps,
                "test_sentences": len(test), "num_beams": cfg.eval.num_beams}
    for seed in seeds:
        for method in ("baseline", *methods):
            name = f"{method}-s{seed}"
            if name in rows and rows[name].get("overrides") == METHODS[method]:
                log.info("methods: %s already measured, skipped", name)
                continue
            rows[name] = _train_and_evaluate(cfg, run_dir, method, seed, name, splits, test, resume)
            rows[name].update(name=name, method=method, seed=seed, overrides=METHODS[method])
            write_outputs(run_dir, list(rows.values()), teacher, settings)
            log.info("methods: %s test BLEU %.2f chrF %.2f%s", name, rows[name]["bleu"], rows[name]["chrf"],
                     " (collapsed)" if rows[name]["collapsed"] else "")
    ordered = [rows[f"{m}-s{s}"] for s in seeds for m in ("baseline", *methods)]
    ordered += [r for r in rows.values() if r not in ordered]  # rows of earlier, wider studies stay
    return write_outputs(run_dir, ordered, teacher, settings)


def _train_and_evaluate(cfg: RunConfig, run_dir: Path, method: str, seed: int, name: str, splits, test,
                        resume: bool) -> dict:

    mcfg = method_config(cfg, method, seed, run_dir)
    out = run_dir / "methods" / name
    updates = mcfg.student_train.max_steps
    if not is_complete(out):
        started = time.time()
        if method == "progressive":  # the chain's stages next to the row: METHOD-sSEED-chain/stage-k

            stages = train_chain(mcfg, run_dir, out.parent / f"{name}-chain", out, resume=resume, evaluate=False)
            updates *= len(stages)
            for stage in stages[:-1]:  # the chain's stages are not the row's student
                shutil.rmtree(Path(stage["dir"]) / "checkpoints", ignore_errors=True)
        else:  # the same student, teacher signal, LoRA and monitor settings as `distilmt distill` gives
            train_student(mcfg, run_dir, name, out, splits.train, resume=resume, complete=False,
                          teacher_dir=None if method == "baseline" else run_dir / "teacher",
                          log_dir=run_dir / "tb" / f"methods-{name}")
        mark_complete(out, drop_checkpoints=True, seconds=round(time.time() - started, 1), updates=updates)
    info = json.loads((out / ".complete").read_text())
    row = _evaluate(mcfg, name, out, test)
    row.update(train_seconds=info.get("seconds"), updates=info.get("updates", updates))
    return row


def _evaluate(cfg: RunConfig, name: str, model_dir: Path, test) -> dict:

    rows, _ = evaluate_models([(name, model_dir)], [s for s, _ in test], [t for _, t in test], cfg.data.target_lang,
                              num_beams=cfg.eval.num_beams, batch_size=cfg.eval.batch_size,
                              max_new_tokens=cfg.eval.max_new_tokens, speed_sentences=0, semantic=False,
                              max_source_tokens=cfg.eval.max_source_tokens)
    keep = ("bleu", "chrf", "ter", "collapsed", "distinct_ratio", "repetition_rate", "params", "translate_s")
    return {"name": name, **{k: rows[0][k] for k in keep}, "path": str(model_dir)}


def _second_teacher(cfg: RunConfig, run_dir: Path, resume: bool) -> None:
    """``teacher-2``: the teacher's recipe with seed + 1, for the ensemble method (trained once)."""

    out = run_dir / "teacher-2"
    if is_complete(out):
        return

    train_cfg = dataclasses.replace(cfg.teacher_train, seed=cfg.teacher_train.seed + 1)
    splits, tokenizer = load_splits(run_dir / "data"), load_tokenizer(run_dir)
    log.info("methods: training a second teacher (seed %d) for the ensemble", train_cfg.seed)
    started = time.time()
    train_seq2seq(build_model(cfg.teacher, tokenizer, seed=train_cfg.seed), tokenizer, splits.train,
                  dev_subset(cfg, splits), train_cfg, out, run_dir / "tb" / "teacher-2", cfg.data.max_tokens,
                  resume=resume)
    mark_complete(out, seconds=round(time.time() - started, 1))


# -- outputs -----------------------------------------------------------------------------------------------------
def add_deltas(rows: list[dict]) -> list[dict]:
    """``delta_bleu`` / ``delta_chrf``: each row minus the baseline row of the same seed (None without one)."""
    base = {r["seed"]: r for r in rows if r["method"] == "baseline"}
    for row in rows:
        ref = base.get(row["seed"])
        for key in ("bleu", "chrf"):
            row[f"delta_{key}"] = round(row[key] - ref[key], 4) if ref else None
    return rows


def summary(rows: list[dict]) -> list[dict]:
    """One line per method (baseline first): mean BLEU/chrF over seeds, each seed's BLEU, and the difference of
    the means to the baseline's."""
    methods = list(dict.fromkeys(["baseline"] + [r["method"] for r in rows]))
    by = {m: [r for r in rows if r["method"] == m] for m in methods}
    base = by.get("baseline") or []
    base_bleu = statistics.mean(r["bleu"] for r in base) if base else None
    base_chrf = statistics.mean(r["chrf"] for r in base) if base else None
    lines = []
    for method in methods:
        group = sorted(by[method], key=lambda r: r["seed"])
        if not group:
            continue
        bleu, chrf = statistics.mean(r["bleu"] for r in group), statistics.mean(r["chrf"] for r in group)
        lines.append({"method": method, "seeds": len(group), "bleu": bleu, "chrf": chrf,
                      "bleu_by_seed": {r["seed"]: r["bleu"] for r in group},
                      "delta_bleu": None if base_bleu is None else bleu - base_bleu,
                      "delta_chrf": None if base_chrf is None else chrf - base_chrf,
                      "collapsed": sum(bool(r["collapsed"]) for r in group),
                      "train_seconds": statistics.mean(r.get("train_seconds") or 0 for r in group)})
    return lines


HEADERS = ("method", "BLEU (mean)", "BLEU per seed", "Δ BLEU vs baseline", "chrF (mean)", "Δ chrF", "collapsed",
           "train s")


def table_cells(line: dict) -> list[str]:
    signed = lambda v: "-" if v is None else f"{v:+.2f}"  # noqa: E731
    seeds = ", ".join(f"s{s}: {b:.2f}" for s, b in line["bleu_by_seed"].items())
    return [line["method"], f"{line['bleu']:.2f}", seeds, signed(line["delta_bleu"]), f"{line['chrf']:.2f}",
            signed(line["delta_chrf"]), f"{line['collapsed']}/{line['seeds']}", f"{line['train_seconds']:.0f}"]


def to_markdown(rows: list[dict], teacher: dict | None, settings: dict) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|---|" + "---:|" * (len(HEADERS) - 1)]
    lines += ["| " + " | ".join(table_cells(line)) + " |" for line in summary(rows)]
    note = (f"Test set: {settings.get('test_sentences')} sentences, beam {settings.get('num_beams')}; every student "
            f"{settings.get('student_updates')} updates (progressive: that many per stage; mutual trains two "
            "students). Δ = method mean - baseline mean over the same seeds.")
    if teacher:
        note += f" Teacher: BLEU {teacher['bleu']:.2f}, chrF {teacher['chrf']:.2f}."
    return "\n".join(lines) + "\n\n" + note + "\n"


def write_outputs(run_dir: Path, rows: list[dict], teacher: dict | None, settings: dict) -> list[dict]:
    """methods.json, methods.md and methods.png, each written atomically; returns the rows with their deltas."""

    rows = add_deltas(rows)
    write_json(rows, run_dir / "methods.json", teacher=teacher, settings=settings)
    with atomic_open(run_dir / "methods.md") as handle:
        handle.write(to_markdown(rows, teacher, settings))
    plot(rows, run_dir / "methods.png")
    return rows


def plot(rows: list[dict], path: Path) -> Path:
    """BLEU per method: one point per seed, the mean as a bar outline, the baseline's seed range as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    lines = summary(rows)
    fig, ax = plt.subplots(figsize=(max(4.5, 0.9 * len(lines) + 1.5), 3.6))
    base = [r["bleu"] for r in rows if r["method"] == "baseline"]
    if base:
        ax.axhspan(min(base), max(base), color="0.85", zorder=0, label="baseline seeds (min-max)")
        ax.axhline(statistics.mean(base), color="0.5", lw=1, zorder=1)
    for x, line in enumerate(lines):
        ax.bar(x, line["bleu"], width=0.6, fill=False, edgecolor="C0", zorder=2)
        ys = list(line["bleu_by_seed"].values())
        ax.scatter([x] * len(ys), ys, color="C1", zorder=3, s=18)
    ax.set_xticks(range(len(lines)), [line["method"] for line in lines], rotation=30, ha="right")
    ax.set_ylabel("test BLEU")
    ax.set_title("Distillation methods: test BLEU per seed")
    if base:
        ax.legend(loc="lower right", fontsize=8)
    with atomic_open(path, binary=True) as handle:
        fig.savefig(handle, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def format_table(rows: list[dict], teacher: dict | None = None):

    caption = f"teacher BLEU {teacher['bleu']:.2f}" if teacher else None
    table = Table(title="Distillation methods (test set)", caption=caption)
    for i, header in enumerate(HEADERS):
        table.add_column(header, justify="left" if i < 1 else "right")
    for line in summary(add_deltas(rows)):
        table.add_row(*table_cells(line), style="bold red" if line["collapsed"] else None)
    return table


def active_methods(distill) -> str:
    """The methods a DistillConfig turns on, in words (for ``distilmt presets``)."""
    d, on = distill, []
    if d.divergence != "forward_kl":
        on.append(d.divergence)
    if d.temperature_schedule != "constant":
        on.append(f"T {d.temperature:g}->{d.temperature_final:g} {d.temperature_schedule}")
    if d.weight_schedule != "constant":
        on.append(f"alpha {d.alpha:g}->{d.final_alpha:g} {d.weight_schedule}")
    on += [name for name, active in (("hidden", d.hidden_weight), ("attention", d.attention_weight),
                                     ("on-policy", d.on_policy_ratio), ("ensemble", d.teachers),
                                     ("mutual", d.mutual)) if active]
    if d.progressive_factor:
        on.append(f"progressive x{d.progressive_factor:g}")
    return ", ".join(on) or "forward KL"


def _read(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise ConfigError(f"{path}: not valid JSON; delete it to measure every row again") from None
