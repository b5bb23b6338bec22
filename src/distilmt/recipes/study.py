"""`distilmt study`: hard labels, soft labels or both — the comparison one reruns on one's own teacher/student pair.

Seven rows, every student derived from the same base teacher with the same initial weights and trained for the
same number of updates (``student_train.max_steps``, required), so its training signal is the only difference:

    teacher         the base teacher (RUN_DIR/teacher, trained here or the user's)
    student         the derived student trained on the references only (the no-KD twin)
    teacher-lora    the teacher fine-tuned with LoRA adapters on the parallel data (lora.*)
    student-lora    the derived student trained with LoRA adapters on the references (base weights frozen)
    hard-label-kd   the student trained on the KD teacher's translations (sequence-level KD: seqkd.* generation
                    of study.label_sources sampled training sources, seqkd.train_on / mix_ratio)
    soft-label-kd   the student trained with token-level KD from the KD teacher on the references (distill.*)
    hard+soft-kd    both: token-level KD on the hard-label training pairs

The KD teacher is ``study.kd_teacher`` (lora by default, base for the ablation). Each stage writes its own directory
and a ``.complete`` marker holding a digest of the settings it depends on (for a student: student.*,
student_train.*, its data and, where used, the KD teacher's, lora.*, seqkd.* and distill.* settings). A finished
stage is skipped; a sweep reuses every stage whose settings digest matches one already trained in the run (its own
directory, the base study's or another sweep's), so sweeping ``distill.temperature`` only trains the two soft-label
rows again. Evaluation rows are cached next to each model (``study-row.json``) for the same test set and settings.

    RUN_DIR/
      config.yaml, data/, tokenizer/, teacher/        as for `distilmt run` (the pipeline's stages)
      teacher-lora/ student/ student-lora/ hard-label-kd/ soft-label-kd/ hard+soft-kd/   the rows' models
      hard-labels/            the KD teacher's translations (seqkd's distilled-corpus format)
      study.json              {"models": [row, ...], "study": {settings, budget}}; rows as metrics.json's
      study.md, report.md, report.html, report-*.png, translations.json, tb/<row>/
      sweeps/KEY/VALUE/       one study per swept value (config.yaml, the stages it had to train, study.json)
      sweep-KEY.json / .md / .png                      the sweep's table and plot

Speed is measured (eval.speed_sentences) for the teacher and student rows only: the other rows have one of those two
architectures (a merged LoRA model is a plain model of its base's shape).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import random
import re
import time
from pathlib import Path

from ..config.run import RunConfig, from_dict, set_override
from ..data.corpus import load_splits
from ..data.tokenizer import tokenizer_fingerprint
from ..errors import ConfigError, RunDirError
from ..evaluation.compare import add_relative, evaluate_models, to_markdown, write_json
from ..evaluation.report import png_data_uri, write_report
from ..rundir import is_complete, load_tokenizer, mark_complete, open_run, teacher_fingerprint, write_text_atomic
from ..teachers.labels import build_distilled, labels_fingerprint, read_distilled, training_pairs
from .stages import labels_engine, prepare_data, test_subset, train_teacher, train_teacher_lora
from .student import train_student

log = logging.getLogger("distilmt")

ROWS = ("teacher", "student", "teacher-lora", "student-lora", "hard-label-kd", "soft-label-kd", "hard+soft-kd")
LABELS = "hard-labels"
ROW_FILE = "study-row.json"
SPEED_ROWS = ("teacher", "student")  # the two architectures of the study
FIXED_SECTIONS = ("name", "description", "data", "teacher", "teacher_train", "eval", "monitor")


def run_study(cfg: RunConfig, run_dir: str | Path, rows: tuple[str, ...] = ROWS, resume: bool = False) -> list[dict]:
    """The whole study into ``run_dir``: data, tokenizer and teacher (pipeline stages), then each row's stages,
    evaluation, ``study.json`` / ``study.md`` and the report. Finished stages are skipped. Returns the rows."""
    run_dir = Path(run_dir)
    cfg = open_run(run_dir, cfg)
    check_rows(rows)
    _check_budget(cfg)
    prepare_data(cfg, run_dir)
    train_teacher(cfg, run_dir, resume=resume)
    return Study(cfg, run_dir, run_dir).run(rows, resume=resume)


def check_rows(rows) -> None:
    unknown = [r for r in rows if r not in ROWS]
    if unknown or not rows:
        raise ConfigError(f"study rows: '{','.join(unknown) or ''}' unknown; choose from {', '.join(ROWS)}")


def _check_budget(cfg: RunConfig) -> None:
    if not cfg.student_train.max_steps:
        raise ConfigError("student_train.max_steps: the study gives every student the same number of updates; set "
                          "it (e.g. student_train.max_steps=700) instead of epochs")


def _digest(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _sample(items: list, n: int, seed: int) -> list:
    """A seeded random sample of ``n`` items in their original order (all of them when n is 0 or too large)."""
    if not n or n >= len(items):
        return list(items)
    return [items[i] for i in sorted(random.Random(seed).sample(range(len(items)), n))]


class Study:
    """The rows of one configuration. ``root`` holds the shared data, tokenizer and teacher; ``home`` is where new
    stages and the outputs go (``root`` itself, or a sweep value's directory)."""

    def __init__(self, cfg: RunConfig, root: Path, home: Path):

        self.cfg, self.root, self.home = cfg, Path(root), Path(home)
        self.splits = load_splits(self.root / "data")
        self.tokenizer = load_tokenizer(self.root)

    # -- what each stage depends on ----------------------------------------------------------------------
    def settings(self, stage: str) -> dict:
        c, asdict = self.cfg, dataclasses.asdict
        lora = {k: v for k, v in asdict(c.lora).items() if k != "students"}
        data = {"student_pairs": c.study.student_pairs, "seed": c.study.seed, "max_tokens": c.data.max_tokens}
        student = {"student": asdict(c.student), "student_train": asdict(c.student_train), "data": data}
        teacher_lora = {"lora": lora, "teacher_train": asdict(c.teacher_train)}
        kd_teacher = {"kd_teacher": c.study.kd_teacher,
                      **(teacher_lora if c.study.kd_teacher == "lora" else {})}
        labels = {"teacher": kd_teacher, "label_sources": c.study.label_sources, "data": data,
                  "generation": {k: v for k, v in asdict(c.seqkd).items()
                                 if k in ("num_beams", "length_penalty", "max_new_tokens", "do_sample", "top_p",
                                          "temperature", "seed", "num_return_sequences")}}
        hard = {"labels": labels, "seqkd": {k: getattr(c.seqkd, k) for k in (
            "min_length_ratio", "max_length_ratio", "min_score", "max_repetition", "train_on", "mix_ratio")}}
        soft = {"teacher": kd_teacher, "distill": asdict(c.distill)}
        return {
            "teacher-lora": teacher_lora, LABELS: labels,
            "student": student, "student-lora": {**student, "lora": lora},
            "hard-label-kd": {**student, **hard}, "soft-label-kd": {**student, **soft},
            "hard+soft-kd": {**student, **hard, **soft},
        }[stage]

    def _pool(self) -> list[Path]:
        sweeps = sorted(p for p in (self.root / "sweeps").glob("*/*") if p.is_dir())
        return list(dict.fromkeys([self.home, self.root, *sweeps]))

    def find(self, stage: str) -> Path | None:
        """A complete directory of ``stage`` trained with this configuration's settings, in any study of the run."""
        digest = _digest(self.settings(stage))
        for folder in self._pool():
            path = folder / stage
            if is_complete(path):
                info = json.loads((path / ".complete").read_text(encoding="utf-8"))
                if info.get("settings") == digest:
                    return path
        return None

    def stage(self, stage: str, resume: bool = False) -> Path:
        """The directory of ``stage``: found complete (skipped) or built now in ``home``."""
        if stage == "teacher":
            return self.root / "teacher"
        found = self.find(stage)
        if found is not None:
            log.info("%s: complete, skipped (%s)", stage, found)
            return found
        out = self.home / stage
        if is_complete(out):
            raise RunDirError(f"{out}: was made with other settings than this study's; delete it to train it again")
        digest = _digest(self.settings(stage))
        if stage == "teacher-lora":

            return train_teacher_lora(self.cfg, self.root, resume=resume, out_dir=out, settings=digest)
        if stage == LABELS:
            return self._labels(out, digest)
        return self._student(stage, out, digest, resume)

    # -- data ---------------------------------------------------------------------------------------------
    def student_pairs(self) -> list[tuple[str, str]]:
        return _sample(list(self.splits.train), self.cfg.study.student_pairs, self.cfg.study.seed)

    def label_sources(self) -> list[str]:
        sources = [s for s, _ in self.student_pairs()]
        return _sample(sources, self.cfg.study.label_sources, self.cfg.study.seed + 1)

    def kd_teacher(self, resume: bool = False) -> Path:
        return self.stage("teacher-lora" if self.cfg.study.kd_teacher == "lora" else "teacher", resume)

    def hard_pairs(self, resume: bool = False) -> list[tuple[str, str]]:

        labels = read_distilled(self.stage(LABELS, resume))
        return training_pairs(self.student_pairs(), labels, self.cfg.seqkd.train_on, self.cfg.seqkd.mix_ratio,
                              seed=self.cfg.student_train.seed)

    # -- stages -------------------------------------------------------------------------------------------
    def _labels(self, out: Path, digest: str) -> Path:
        """The KD teacher translates ``study.label_sources`` training sources (seqkd generation settings)."""

        teacher_dir = self.kd_teacher()
        sources = self.label_sources()
        teacher_id = teacher_fingerprint(teacher_dir)
        seqkd, load, reference = labels_engine(self.cfg, teacher_dir, teacher_id, out)
        fingerprint = labels_fingerprint(sources, tokenizer_fingerprint(self.tokenizer), teacher_id, seqkd)
        started = time.time()
        stats = build_distilled(out, sources, self.tokenizer, load, seqkd, fingerprint,
                                f"delete {out} and run the study again", reference=reference)
        mark_complete(out, settings=digest, kept=stats["kept"], sources=stats["sources"],
                      seconds=round(time.time() - started, 1))
        return out

    def _student(self, row: str, out: Path, digest: str, resume: bool) -> Path:
        cfg = self.cfg
        pairs = self.hard_pairs(resume) if row in ("hard-label-kd", "hard+soft-kd") else self.student_pairs()
        soft = row in ("soft-label-kd", "hard+soft-kd")
        log.info("%s: %d training pairs, %d updates%s", row, len(pairs), cfg.student_train.max_steps,
                 f", token-level KD from {cfg.study.kd_teacher} teacher" if soft else "")
        # Every student starts from the same derived weights, so its training signal is the only difference.
        train_student(cfg, self.root, row, out, pairs, teacher_dir=self.kd_teacher(resume) if soft else None,
                      lora=row == "student-lora" or cfg.lora.students, monitor=False,
                      log_dir=self.home / "tb" / row, resume=resume, settings=digest, pairs=len(pairs))
        return out

    # -- evaluation and outputs ---------------------------------------------------------------------------
    def test_pairs(self) -> list[tuple[str, str]]:

        return test_subset(self.cfg, self.splits)

    def evaluate(self, row: str, path: Path) -> tuple[dict, list[str]]:
        """The row's comparison row and translations (cached in ``path/study-row.json`` for this test set)."""

        e, test = self.cfg.eval, self.test_pairs()
        speed = e.speed_sentences if row in SPEED_ROWS else 0
        key = _digest({"test": test, "beams": e.num_beams, "max_new_tokens": e.max_new_tokens, "speed": speed,
                       "max_source_tokens": e.max_source_tokens,
                       "semantic": e.semantic, "row": row})
        cached = path / ROW_FILE
        if cached.is_file():
            data = json.loads(cached.read_text(encoding="utf-8"))
            if data.get("key") == key:
                return data["row"], data["hyps"]
        rows, hyps = evaluate_models([(row, path)], [s for s, _ in test], [t for _, t in test],
                                     self.cfg.data.target_lang, reference_name=row, num_beams=e.num_beams,
                                     batch_size=e.batch_size, max_new_tokens=e.max_new_tokens,
                                     speed_sentences=speed, semantic=e.semantic,
                                     max_source_tokens=e.max_source_tokens)
        write_text_atomic(cached, json.dumps({"key": key, "row": rows[0], "hyps": hyps[row]}, ensure_ascii=False))
        return rows[0], hyps[row]

    def run(self, rows: tuple[str, ...] = ROWS, resume: bool = False) -> list[dict]:

        started = time.time()
        paths = {row: self.stage(row, resume) for row in rows}
        results, hyps = [], {}
        for row in rows:
            result, hyps[row] = self.evaluate(row, paths[row])
            info = json.loads((paths[row] / ".complete").read_text(encoding="utf-8"))
            result.update(stage_dir=str(paths[row]), train_pairs=info.get("pairs"),
                          updates=self.cfg.student_train.max_steps if row not in ("teacher", "teacher-lora") else None)
            results.append(result)
        add_relative(results, "teacher")
        test = self.test_pairs()
        meta = self.describe()
        write_json(results, self.home / "study.json", study=meta)
        lines = ["# distilmt study", "", *[f"* {k}: {v}" for k, v in meta.items()], "", to_markdown(results)]
        write_text_atomic(self.home / "study.md", "\n".join(lines))
        write_text_atomic(self.home / "translations.json", json.dumps(
            {"sources": [s for s, _ in test], "references": [t for _, t in test], "hypotheses": hyps},
            ensure_ascii=False, indent=1))
        write_report(self.home, self.cfg, title="distilmt study", metrics_file="study.json")
        log.info("study: %d rows in %s (%.1f min)", len(results), self.home / "study.json",
                 (time.time() - started) / 60)
        return results

    def describe(self) -> dict:
        c = self.cfg
        return {"updates per student": c.student_train.max_steps, "KD teacher": c.study.kd_teacher,
                "student training pairs": len(self.student_pairs()),
                "hard labels": f"{len(self.label_sources())} sources, beam {c.seqkd.num_beams}"
                               f"{', sampled' if c.seqkd.do_sample else ''}, train_on {c.seqkd.train_on}",
                "soft labels": f"alpha {c.distill.alpha}, beta {c.distill.beta}, T {c.distill.temperature}, "
                               f"{c.distill.divergence}",
                "LoRA": f"rank {c.lora.rank}, alpha {c.lora.alpha}, dropout {c.lora.dropout}, "
                        f"lr {c.lora.learning_rate}, teacher {c.lora.teacher_steps} updates",
                "test sentences": len(self.test_pairs())}


# -- sweeps -------------------------------------------------------------------------------------------------
def parse_sweep(specs: list[str]) -> tuple[list[str], list[list[str]]]:
    """``["distill.temperature=1,2,4"]`` -> (keys, values per key). Several specs change together (same count);
    values are split on ``;`` when the spec has one (for list values), else on ``,``."""
    keys, values = [], []
    for spec in specs:
        key, sep, raw = spec.partition("=")
        key = key.strip()
        if not sep or "." not in key or not raw.strip():
            raise ConfigError(f"--sweep {spec}: write it as section.field=V1,V2,... e.g. distill.temperature=1,2,4")
        if key.split(".", 1)[0] in FIXED_SECTIONS:
            raise ConfigError(f"--sweep {key}: the study's data, teacher and evaluation are shared by every swept "
                              "value; sweep study.student_pairs for the students' training-data size, or start "
                              "another --run-dir for another teacher or corpus")
        items = [v.strip() for v in raw.split(";" if ";" in raw else ",") if v.strip()]
        if len(items) < 2 or len(set(items)) != len(items):
            raise ConfigError(f"--sweep {key}: give at least two different values, e.g. {key}=1,2")
        keys.append(key)
        values.append(items)
    if len({len(v) for v in values}) > 1:
        raise ConfigError(f"--sweep: {', '.join(keys)} change together and need the same number of values")
    return keys, values


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("_") or "value"


def sweep(cfg: RunConfig, run_dir: str | Path, specs: list[str], rows: tuple[str, ...] = ROWS,
          resume: bool = False) -> dict:
    """One study per swept value (``RUN_DIR/sweeps/KEY/VALUE/``), reusing every stage whose settings did not change;
    writes ``RUN_DIR/sweep-KEY.json`` (``{"keys", "values": [{key: value}, ...], "results": [{"values", "models"}]}``),
    ``.md`` (a table: one line per value, BLEU / chrF per row) and ``.png`` (BLEU and chrF against the value)."""
    root = Path(run_dir)
    cfg = open_run(root, cfg)
    check_rows(rows)
    keys, values = parse_sweep(specs)
    label = _safe(",".join(keys))
    configs = []  # every value checked before anything trains
    for combo in zip(*values):
        settings = cfg.to_dict()
        for key, raw in zip(keys, combo):
            set_override(settings, key, raw)
        try:
            value_cfg = from_dict(RunConfig, settings)
        except ConfigError as exc:
            raise ConfigError(f"--sweep {', '.join(f'{k}={v}' for k, v in zip(keys, combo))}: {exc}") from None
        _check_budget(value_cfg)
        configs.append((combo, value_cfg))
    prepare_data(cfg, root)
    train_teacher(cfg, root, resume=resume)
    results = []
    for combo, value_cfg in configs:
        home = root / "sweeps" / label / _safe("_".join(combo))
        log.info("sweep %s: %s", ", ".join(f"{k}={v}" for k, v in zip(keys, combo)), home)
        value_cfg = open_run(home, value_cfg)
        models = Study(value_cfg, root, home).run(rows, resume=resume)
        results.append({"values": dict(zip(keys, combo)), "models": models})
    summary = {"keys": keys, "values": [r["values"] for r in results], "results": results}

    write_text_atomic(root / f"sweep-{label}.json", json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    write_text_atomic(root / f"sweep-{label}.md", sweep_markdown(summary))
    plot = plot_sweep(summary)
    if plot is not None:

        (root / f"sweep-{label}.png").write_bytes(base64.b64decode(plot))
    return summary


def sweep_markdown(summary: dict) -> str:
    """One line per swept value, one ``BLEU / chrF`` column per row (collapsed models marked)."""
    names = [m["name"] for m in summary["results"][0]["models"]]
    keys = summary["keys"]
    lines = [f"# sweep over {', '.join(keys)}", "", "BLEU / chrF on the test set; (collapsed) marks a model that gives "
             "the same few outputs for most inputs.", "",
             "| " + " | ".join([*keys, *names]) + " |", "|" + "|".join(["---"] * len(keys) + ["---:"] * len(names)) + "|"]
    for result in summary["results"]:
        by_name = {m["name"]: m for m in result["models"]}
        cells = [str(result["values"][k]) for k in keys]
        for name in names:
            m = by_name[name]
            cells.append(f"{m['bleu']:.2f} / {m['chrf']:.1f}" + (" (collapsed)" if m.get("collapsed") else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_sweep(summary: dict) -> str | None:
    """BLEU and chrF of every row against the swept value (base64 PNG, as the report's plots)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    results = summary["results"]
    if not results:
        return None
    labels = [", ".join(str(v) for v in r["values"].values()) for r in results]
    names = [m["name"] for m in results[0]["models"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("bleu", "chrf")):
        for name in names:
            ys = [next(m[metric] for m in r["models"] if m["name"] == name) for r in results]
            ax.plot(range(len(labels)), ys, marker="o", label=name)
        ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel(", ".join(summary["keys"]))
        ax.set_ylabel(f"test {metric.upper() if metric == 'bleu' else 'chrF'}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"sweep over {', '.join(summary['keys'])}")
    fig.tight_layout()
    return png_data_uri(fig)
