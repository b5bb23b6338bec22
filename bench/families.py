"""Benchmark: every teacher family as the hub ships it, driven through the real CLI stage by stage (issue 13).

    OMP_NUM_THREADS=1 .venv/bin/python bench/families.py [--corpus ../shared/data/tatoeba-en-hu/pairs.tsv]
        [--families opus-mt,nllb,...] [--work runs/bench-families] [--out bench/families.md] [--subprocess]

For each family a tiny stand-in teacher is built with the genuine transformers classes and a tokenizer trained on
the corpus's training split (random weights trained a few full-batch steps, as the tests do), saved as the hub ships
that family (the builders are tests/standins.py, shared with the tests: this script puts ``tests/`` on ``sys.path``
to import them). Then the real CLI (``distilmt.cli.main``, in this process; ``--subprocess``: ``python -m
distilmt.cli`` per stage) runs the stages on the corpus, each in its own command, and each command is recorded in
``WORK/FAMILY/commands.sh`` so a user can rerun it:

    prepare-data (--teacher DIR --corpus --direction en-hu, the family's --set), train-teacher (taking --teacher as
    it is), cache-teacher, generate-labels (seq-KD labels), distill --only baseline / kd / seqkd, evaluate,
    export (CTranslate2 int8 with its parity check) of the KD student (else the seq-KD student), translate (the
    export, else that student)

Families: opus-mt (bilingual, shared vocabulary), opus-mt-sep (separate vocabularies), opus-mt-mul (multilingual,
``data.target_token=>>hun<<``), m2m100 (codes ``__en__``/``__hu__``), nllb (``eng_Latn``/``hun_Latn``, saved with
src_lang/tgt_lang null), t5 (T5 v1.1, ``data.source_prefix``), qwen2 (a causal teacher, ``teacher.kind=causal``,
prompted with its chat template, and a seq2seq student: token KD does not apply) and qwen2-causal (the same teacher
with a smaller Qwen2 student of its tokenizer, ``student.kind=causal``: CTranslate2 export does not apply).

Each stage is ok, refused (exit status 2: distilmt's one-line reason, quoted under the table) or failed (a
traceback or another exit status: the error's first line under the table, the whole output in WORK/FAMILY/stages.log),
with one measured figure: seconds of the stage; for generate-labels the engine and, with CTranslate2, the share of
labels equal to HF beam search's (distilled/stats.json); for evaluate the student's test BLEU; for export the parity
check's max |delta log-prob| at float32 (distilmt_export.json). The Markdown table is printed and written to
``--out``, the details to ``WORK/families.json``; the script ends with ``name: value`` lines.

Sizes (tiny models, d_model 32, 1-2 layers; stand-ins trained 120 full-batch steps on 64 pairs; runs of 400 training
pairs, 48 test sentences, 60 updates per student; greedy evaluation, no speed timing) keep the whole bench at a few
minutes at OMP_NUM_THREADS=1 on a 2-core machine (CTranslate2 is given the machine's cores by distilmt itself). The
figures are those of stand-ins: they show that each stage works with a family's files as shipped, not how good a real
teacher of that family is (BLEU around 1).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
import yaml

from distilmt.cli import main
from distilmt.config import DataConfig
from distilmt.data.corpus import build_splits
from distilmt.data.readers import read_tsv
from distilmt.models.loading import EXPORT_INFO

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import standins  # noqa: E402  (tests/standins.py: the stand-in builders the tests use)

DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "tatoeba-en-hu" / "pairs.tsv"
PREFIX = "translate English to Hungarian: "
TEACHER_STEPS = 120  # full-batch updates of each stand-in before the run takes it as it is

CONFIG = {
    "name": "families",
    "data": {"vocab_size": 400, "max_tokens": 64, "max_train_pairs": 400, "max_eval_sentences": 16,
             "max_test_sentences": 48, "dev_size": 48, "test_size": 48},
    # the shape of a seq2seq student derived for a causal teacher (the others derive theirs from the teacher)
    "teacher": {"d_model": 32, "encoder_layers": 2, "decoder_layers": 2, "ffn_dim": 64, "heads": 4, "dropout": 0.0},
    "student": {"depth_ratio": 0.5, "width_ratio": 1.0},
    "student_train": {"max_steps": 60, "batch_tokens": 600, "warmup_steps": 2, "learning_rate": 3e-3, "bf16": False},
    "distill": {"teacher_cache": True},
    "seqkd": {"enabled": True, "num_beams": 2, "max_new_tokens": 32, "shard_size": 150, "agreement_sources": 16},
    "eval": {"num_beams": 1, "batch_size": 24, "max_new_tokens": 32, "export_ct2": False, "speed_sentences": 0,
             "semantic": False},
    "monitor": {"enabled": True, "sample_frequency": 20, "num_samples": 1},
}

STAGES = ("stand-in", "prepare-data", "train-teacher", "cache-teacher", "generate-labels", "distill baseline",
          "distill kd", "distill seqkd", "evaluate", "export", "translate")


@dataclass
class Family:
    name: str
    what: str  # the row's label: what is shipped
    build: Callable[[Path, list], Path]  # (work dir, training pairs) -> the teacher's directory
    settings: tuple[str, ...] = ()  # --set KEY=VALUE of its run
    student: Callable[[Path, Path, list], Path] | None = None  # (work dir, teacher dir, pairs) -> a causal student


def _qwen2_student(work: Path, teacher: Path, pairs) -> Path:
    """A smaller Qwen2 (1 layer, trained half as many steps) with the teacher's tokenizer: the family's small sibling."""
    tokenizer = standins.AutoTokenizer.from_pretrained(teacher)
    return standins.qwen2_dir(work / "qwen2-student", pairs, layers=1, seed=1, tokenizer=tokenizer,
                              train_steps=TEACHER_STEPS // 2)


CAUSAL = ("teacher.kind=causal", "distill.teacher_cache=false")  # (a causal LM has no teacher cache)

FAMILIES = (
    Family("opus-mt", "opus-mt bilingual (MarianMTModel, source/target.spm, vocab.json)",
           lambda w, p: standins.opus_mt(w / "opus-mt-en-hu", p, train_steps=TEACHER_STEPS)),
    Family("opus-mt-sep", "opus-mt, separate vocabularies (+ target_vocab.json)",
           lambda w, p: standins.opus_mt(w / "opus-mt-en-hu-sep", p, separate=True, src_size=500, tgt_size=300,
                                         train_steps=TEACHER_STEPS)),
    Family("opus-mt-mul", "opus-mt multilingual (>>hun<<, data.target_token)",
           lambda w, p: standins.opus_mt(w / "opus-mt-en-mul", p, target_tokens=(">>deu<<", ">>fin<<", ">>hun<<"),
                                         train_token=">>hun<<", train_steps=TEACHER_STEPS),
           settings=("data.target_token='>>hun<<'",)),  # (quoted: YAML reads a bare > as a block scalar)
    Family("m2m100", "M2M100 (M2M100Tokenizer, __en__/__hu__)",
           lambda w, p: standins.m2m100(w / "m2m100", p, train_steps=TEACHER_STEPS)),
    Family("nllb", "NLLB-200 (NllbTokenizer, eng_Latn/hun_Latn, src/tgt_lang null)",
           lambda w, p: standins.nllb(w / "nllb", p, train_steps=TEACHER_STEPS)),
    Family("t5", "T5 v1.1 (T5Tokenizer, spiece.model, data.source_prefix)",
           lambda w, p: standins.t5(w / "t5", p, PREFIX, train_steps=TEACHER_STEPS),
           settings=(f"data.source_prefix='{PREFIX}'",)),  # (quoted: the trailing space is kept)
    Family("qwen2", "Qwen2 causal LM (byte-level BPE, chat template) -> seq2seq student",
           lambda w, p: standins.qwen2_dir(w / "qwen2", p, train_steps=TEACHER_STEPS), settings=CAUSAL),
    Family("qwen2-causal", "Qwen2 causal LM -> Qwen2 student (student.kind=causal)",
           lambda w, p: standins.qwen2_dir(w / "qwen2", p, train_steps=TEACHER_STEPS), settings=CAUSAL,
           student=_qwen2_student),
)


@dataclass
class Result:
    status: str  # ok, refused, failed
    seconds: float
    figure: str = ""  # the cell's measured figure (seconds unless the stage has another)
    reason: str = ""  # refused: distilmt's line; failed: the error's first line; translate: the translation
    command: str = ""
    details: dict = field(default_factory=dict)  # what the figure was read from (families.json)


@dataclass
class Row:
    family: Family
    results: dict[str, Result] = field(default_factory=dict)


class Runner:
    """Runs one distilmt command (in this process, or as ``python -m distilmt.cli``), recording it and its output."""

    def __init__(self, log: Path, commands: Path, in_process: bool):
        self.log, self.commands, self.in_process = log, commands, in_process

    def __call__(self, argv: list[str]) -> Result:
        command = "distilmt " + shlex.join(argv)
        with self.commands.open("a", encoding="utf-8") as f:
            f.write(command + "\n")
        started = time.perf_counter()
        out, err = io.StringIO(), io.StringIO()
        error = ""
        if self.in_process:
            library = logging.getLogger("transformers").handlers  # bound to the real stderr: this stage's output too
            streams = [handler.setStream(err) for handler in library]
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    rc = main(argv)
                except SystemExit as exc:  # argparse
                    rc = exc.code if isinstance(exc.code, int) else 1
                except Exception as exc:  # a bug: the project promises one line for a user's mistake
                    rc = 1
                    err.write(traceback.format_exc())
                    error = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
            for handler, stream in zip(library, streams):
                handler.setStream(stream)
        else:
            done = subprocess.run([sys.executable, "-m", "distilmt.cli", *argv], capture_output=True, text=True,
                                  env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
                                      str(ROOT / "src"), os.environ.get("PYTHONPATH")]))})
            rc = done.returncode
            out.write(done.stdout)
            err.write(done.stderr)
        seconds = time.perf_counter() - started
        with self.log.open("a", encoding="utf-8") as f:
            f.write(f"$ {command}\n{out.getvalue()}{err.getvalue()}[exit {rc}, {seconds:.1f}s]\n\n")
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        said = [line.removeprefix("distilmt: error: ") for line in lines if line.startswith("distilmt: error: ")]
        if rc == 0:
            return Result("ok", seconds, _seconds(seconds), command=command)
        if rc == 2 and said and not error:
            return Result("refused", seconds, reason=said[-1], command=command)
        if not error and lines:  # a subprocess's traceback ends with the exception's line
            error = next((line for line in reversed(lines) if not line.startswith(" ")), lines[-1])
        return Result("failed", seconds, reason=error or f"exit status {rc}", command=command)


def _seconds(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds >= 1 else f"{seconds:.2f} s"


def stand_in(family: Family, work: Path, pairs) -> tuple[Result, Path | None, Path | None]:
    started = time.perf_counter()
    try:
        teacher = family.build(work, pairs)
        student = family.student(work, teacher, pairs) if family.student else None
    except Exception as exc:  # the bench's own builder: recorded like a stage
        with (work / "stages.log").open("a", encoding="utf-8") as f:
            f.write(traceback.format_exc())
        first = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
        return Result("failed", time.perf_counter() - started, reason=first), None, None
    seconds = time.perf_counter() - started
    return Result("ok", seconds, _seconds(seconds)), teacher, student


def run_family(family: Family, work: Path, corpus: str, config: Path, pairs, in_process: bool) -> Row:
    """The stand-in, then every stage as its own distilmt command on ``work/run``."""
    row = Row(family)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / "commands.sh").write_text(f"# {family.what}: the teacher (and student) built by bench/families.py with "
                                      "tests/standins.py, then these commands\n", encoding="utf-8")
    run = Runner(work / "stages.log", work / "commands.sh", in_process)
    row.results["stand-in"], teacher, student = stand_in(family, work, pairs)
    if teacher is None:
        return row
    run_dir = str(work / "run")
    settings = list(family.settings) + (["student.kind=causal", f"student.path={student}"] if student else [])
    sets = [item for s in settings for item in ("--set", s)]
    row.results["prepare-data"] = run(["prepare-data", "--config", str(config), "--corpus", corpus, "--direction",
                                       "en-hu", "--teacher", str(teacher), *sets, "--run-dir", run_dir])
    row.results["train-teacher"] = run(["train-teacher", "--teacher", str(teacher), "--run-dir", run_dir])
    row.results["cache-teacher"] = run(["cache-teacher", "--run-dir", run_dir])
    row.results["generate-labels"] = labels = run(["generate-labels", "--run-dir", run_dir])
    if labels.status == "ok":
        labels.figure, labels.details = labels_figure(Path(run_dir) / "distilled", labels.seconds)
    for only in ("baseline", "kd", "seqkd"):
        row.results[f"distill {only}"] = run(["distill", "--only", only, "--run-dir", run_dir])
    name = next((n for n in ("student-kd", "student-seqkd", "student-baseline")
                 if (Path(run_dir) / n / ".complete").is_file()), "student-kd")
    row.results["evaluate"] = evaluated = run(["evaluate", "--run-dir", run_dir])
    if evaluated.status == "ok":
        evaluated.figure, evaluated.details = bleu_figure(Path(run_dir) / "metrics.json", name)
    export_dir = Path(run_dir) / "export" / f"{name}-ct2-int8"
    row.results["export"] = exported = run(["export", f"{run_dir}/{name}", str(export_dir), "--quantization",
                                            "int8", "--force"])
    if exported.status == "ok":
        exported.figure, exported.details = parity_figure(export_dir / EXPORT_INFO)
    text = first_test_source(Path(run_dir))
    model = str(export_dir) if exported.status == "ok" else name
    row.results["translate"] = translated = run(["translate", model, "--run-dir", run_dir, "--text", text,
                                                 "--beams", "1"])
    if translated.status == "ok":
        output = last_output(work / "stages.log")
        translated.figure += f" ({model.rsplit('/', 1)[-1]})" if output else " (empty output)"
        translated.reason = output
    return row


def labels_figure(distilled: Path, seconds: float) -> tuple[str, dict]:
    """The engine that made the labels and, with CTranslate2, its agreement with HF beam search."""
    try:
        settings = json.loads((distilled / "manifest.json").read_text(encoding="utf-8")).get("settings", {})
    except (OSError, ValueError):
        settings = {}
    stats = json.loads((distilled / "stats.json").read_text(encoding="utf-8"))
    engine = settings.get("engine", "hf")  # (a corpus without the setting was made by HF generate)
    if engine == "ct2":
        engine = f"ct2 {settings.get('ct2_quantization', '')}".strip()
    agreement = stats.get("agreement")
    details = {"engine": engine, "kept": stats["kept"], "sources": stats["sources"], "agreement": agreement}
    if agreement:
        return f"{engine}, {100 * agreement['exact_match']:.0f}% = HF ({agreement['sources']})", details
    return f"{engine}, {_seconds(seconds)}", details


def bleu_figure(metrics: Path, name: str) -> tuple[str, dict]:
    rows = {r["name"]: r for r in json.loads(metrics.read_text(encoding="utf-8"))["models"]}
    details = {"bleu": {n: r["bleu"] for n, r in rows.items()}, "chrf": {n: r["chrf"] for n, r in rows.items()}}
    if name not in rows:
        return f"no {name} row", details
    return f"BLEU {rows[name]['bleu']:.2f} ({name.removeprefix('student-')})", details


def parity_figure(info: Path) -> tuple[str, dict]:
    parity = json.loads(info.read_text(encoding="utf-8"))["parity"]
    text = f"Δ {parity['float32']['max_abs_logprob_diff']:.1e}"
    if "exported" in parity:
        text += f", int8 {parity['exported']['max_abs_logprob_diff']:.2f}"
    return text, parity


def first_test_source(run_dir: Path) -> str:
    try:
        return read_tsv(run_dir / "data" / "test.tsv", columns=2)[0][0]
    except Exception:  # no data: translate still runs, and says what is missing
        return "Where are you going tomorrow?"


def last_output(log: Path) -> str:
    """The translation the last command printed (the line before its exit marker)."""
    block = log.read_text(encoding="utf-8").rstrip().rsplit("\n$ ", 1)[-1].splitlines()
    lines = [line for line in block[1:-1] if line.strip()]
    return lines[-1] if lines else ""


# -- the table -----------------------------------------------------------------------------------------------------
def markdown(rows: list[Row], header: str) -> str:
    notes: list[str] = []
    lines = [header, "", "| family | " + " | ".join(STAGES) + " |", "|---|" + "---|" * len(STAGES)]
    for row in rows:
        cells = []
        for stage in STAGES:
            result = row.results.get(stage)
            if result is None:
                cells.append("–")
            elif result.status == "ok":
                cells.append(f"ok · {result.figure}")
            else:
                notes.append(f"{row.family.name}, {stage}: {result.reason}")
                cells.append(f"{result.status} [{len(notes)}]")
        lines.append(f"| {row.family.name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"[{i}] {note}" for i, note in enumerate(notes, 1)]
    lines.append("")
    lines += [f"* {row.family.name}: {row.family.what}" for row in rows]
    return "\n".join(lines) + "\n"


def main_bench() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(DEFAULT_CORPUS) if DEFAULT_CORPUS.is_file() else "bible",
                        help="an en<TAB>hu corpus (default: ../shared/data/tatoeba-en-hu/pairs.tsv when present, "
                             "else the built-in bible corpus)")
    parser.add_argument("--families", default=",".join(f.name for f in FAMILIES),
                        help="comma-separated families (default: all)")
    parser.add_argument("--work", default="runs/bench-families", help="where stand-ins and runs go (replaced)")
    parser.add_argument("--out", default="bench/families.md", help="the Markdown table is written here")
    parser.add_argument("--subprocess", action="store_true",
                        help="run each stage as `python -m distilmt.cli ...` instead of in this process")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.families.split(",") if name.strip()]
    unknown = sorted(set(chosen) - {f.name for f in FAMILIES})
    if unknown:
        parser.error(f"unknown families {', '.join(unknown)}; choose from {', '.join(f.name for f in FAMILIES)}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    transformers.utils.logging.disable_progress_bar()  # (the stages' logs hold their warnings, not their bars)
    # progress and library logs go to WORK/bench.log (the CLI's basicConfig is then a no-op); each run has run.log
    logging.basicConfig(level=logging.INFO, filename=work / "bench.log", force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG, sort_keys=False), encoding="utf-8")
    started = time.perf_counter()
    data = DataConfig(**{**CONFIG["data"], "corpus": args.corpus, "source_lang": "en", "target_lang": "hu"})
    pairs = build_splits(data).train  # the stand-ins learn from the run's training split only (never its test set)
    rows = []
    for family in (f for f in FAMILIES if f.name in chosen):
        print(f"{family.name}: ...", end="", flush=True)
        family_started = time.perf_counter()
        rows.append(run_family(family, work / family.name, args.corpus, config, pairs, not args.subprocess))
        states = [r.status for r in rows[-1].results.values()]
        print(f" {states.count('ok')} ok, {states.count('refused')} refused, {states.count('failed')} failed "
              f"({time.perf_counter() - family_started:.0f} s)", flush=True)
    total = time.perf_counter() - started
    corpus = Path(args.corpus).name if args.corpus != "bible" else "the built-in bible corpus"
    header = (f"{len(rows)} families, corpus {corpus} en->hu ({len(pairs)} training pairs, "
              f"{CONFIG['data']['max_test_sentences']} test sentences), {total / 60:.1f} min at "
              f"{torch.get_num_threads()} torch thread(s){', one process per stage' if args.subprocess else ''}")
    table = markdown(rows, header)
    print()
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table, encoding="utf-8")
    (work / "families.json").write_text(json.dumps(
        {"corpus": args.corpus, "seconds": round(total, 1), "threads": torch.get_num_threads(),
         "families": {row.family.name: {stage: vars(result) for stage, result in row.results.items()}
                      for row in rows}}, indent=1, ensure_ascii=False), encoding="utf-8")
    results = [result for row in rows for result in row.results.values()]
    clean = sum(all(r.status != "failed" for r in row.results.values()) for row in rows)
    print(f"written: {args.out}, {work / 'families.json'} (commands and output: {work}/FAMILY/commands.sh, stages.log)")
    print(f"families_ok: {clean}/{len(rows)}")
    print(f"stages_ok: {sum(r.status == 'ok' for r in results)}/{len(results)}")
    print(f"stages_refused: {sum(r.status == 'refused' for r in results)}")
    print(f"stages_failed: {sum(r.status == 'failed' for r in results)}")
    print(f"minutes: {total / 60:.1f}")
    print(f"threads: {torch.get_num_threads()}")
    return 0


if __name__ == "__main__":
    sys.exit(main_bench())
