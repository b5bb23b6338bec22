"""Does distillation pay? The whole job (:func:`distilmt.recipes.pipeline.run`) once per student seed, one teacher.

``distilmt value`` (``make value``) runs the config for each seed in ``RUN_DIR/seed-S/``: the first seed trains the
teacher (or takes ``teacher.path``), the others take that teacher as it is, so the seeds differ only in the students'
initialisation and data order (``student_train.seed``). Each seed's no-KD twin and KD student are compared on the test
set by paired bootstrap (``kd_vs_baseline`` of its metrics.json).

    RUN_DIR/seed-S/          one whole run per seed (metrics.json, report.html, the models)
    RUN_DIR/value.json       {"runs": [{"seed", "run_dir", "models": [metrics rows], "kd_vs_baseline"}, ...]}
    RUN_DIR/value.md         per seed: teacher, twin and KD student (and seq-KD student) side by side
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from ..config import RunConfig
from ..errors import ConfigError
from ..evaluation.compare import cell
from ..rundir import write_text_atomic
from . import pipeline

log = logging.getLogger(__name__)

VALUE_ROWS = ("teacher", "student-baseline", "student-kd", "student-seqkd", "student-kd-ct2-int8")
"""The rows of value.md, in order (those a run has)."""
VALUE_COLUMNS = (("bleu", "{:.2f}"), ("chrf", "{:.1f}"), ("params", "{:,}"), ("compression", "{:.2f}×"),
                 ("retention", "{:.0%}"), ("collapsed", "{}"))


def seed_config(cfg: RunConfig, seed: int, teacher: Path | None) -> RunConfig:
    """``cfg`` with the students' seed, and ``teacher`` (a trained teacher directory) as its teacher when given."""
    out = dataclasses.replace(cfg, student_train=dataclasses.replace(cfg.student_train, seed=seed))
    if teacher is not None:
        out = dataclasses.replace(out, teacher=dataclasses.replace(cfg.teacher, path=str(teacher)))
    return out


def run_seeds(cfg: RunConfig, run_dir: str | Path, seeds: Sequence[int] = (1, 2), resume: bool = False) -> dict:
    """Run ``cfg`` once per seed into ``run_dir/seed-S`` (one teacher for all) and write value.json and value.md."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {','.join(map(str, seeds))}: give one or more different seeds, e.g. --seeds 1,2")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    teacher = None
    runs = []
    for seed in seeds:
        seed_dir = run_dir / f"seed-{seed}"
        log.info("value: seed %d into %s", seed, seed_dir)
        pipeline.run(seed_config(cfg, seed, teacher), seed_dir, resume=resume)
        teacher = teacher or seed_dir / "teacher"
        metrics = json.loads((seed_dir / "metrics.json").read_text(encoding="utf-8"))
        runs.append({"seed": seed, "run_dir": str(seed_dir), "models": metrics["models"],
                     "kd_vs_baseline": metrics.get("kd_vs_baseline")})
    summary = {"runs": runs}
    write_text_atomic(run_dir / "value.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    write_text_atomic(run_dir / "value.md", value_markdown(summary))
    return summary


def value_markdown(summary: dict) -> str:
    """One table row per seed and model: BLEU, chrF, parameters, compression, retention, collapse; then each seed's
    KD-vs-twin bootstrap line."""
    lines = ["| seed | model | BLEU | chrF | params | compression | BLEU kept | collapsed |",
             "|---:|---|---:|---:|---:|---:|---:|---|"]
    verdicts = []
    for run in summary["runs"]:
        rows = {row["name"]: row for row in run["models"]}
        for name in (n for n in VALUE_ROWS if n in rows):
            cells = [cell(rows[name], key, fmt) for key, fmt in VALUE_COLUMNS]
            lines.append(f"| {run['seed']} | {name} | " + " | ".join(cells) + " |")
        test = run.get("kd_vs_baseline")
        if test:
            bleu = test["bleu"]
            verdicts.append(f"- seed {run['seed']}: KD {bleu['system']:.2f} vs twin {bleu['baseline']:.2f} BLEU "
                            f"({bleu['delta']:+.2f}, 95 % interval {bleu['ci95'][0]:+.2f} to {bleu['ci95'][1]:+.2f}); "
                            f"KD higher in {bleu['system_better']:.1%} and lower in {bleu['system_worse']:.1%} of "
                            f"{test['n_samples']} paired bootstrap resamples of {test['sentences']} test sentences")
    return "\n".join(lines + [""] + verdicts) + "\n"
