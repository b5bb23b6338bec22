"""One entry point: a table of subcommands, each calling one recipe (distilmt.recipes); `run` does them all.

The recipes are imported when their command runs, so `distilmt --help` stays fast.

User mistakes (bad config values, bad corpus files, a wrong run directory, an incompatible teacher)
end in one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from pathlib import Path

from .config import PRESETS, load_config
from .errors import ConfigError, ModelLoadError, RunDirError, UserError
from .ranks import is_main, main_first
from .rundir import is_complete, open_run

DEFAULT_RUN_DIR = "runs/latest"


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="quick, conservative, balanced, aggressive or quality (default: quick)")
    p.add_argument("--config", help="a YAML file of settings instead of a preset")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set distill.temperature=2 --set data.source_lang=hu")
    p.add_argument("--direction", help="shorthand for data.source_lang/target_lang, e.g. hu-en")
    p.add_argument("--corpus", help="shorthand for data.corpus: a .tsv/.jsonl file or a PREFIX of PREFIX.src/.tgt")
    p.add_argument("--teacher", help="shorthand for teacher.path: a local Hugging Face seq2seq directory")


def _run_dir_arg(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--run-dir", default=None if required else DEFAULT_RUN_DIR, required=required,
                   help=f"the run directory every stage reads and writes (default: {DEFAULT_RUN_DIR})")


def _resume_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", action="store_true", help="continue an interrupted training from its last checkpoint")


def _test_set_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--test-set", dest="test_sets", action="append", default=[],
                   metavar="NAME=PATH[@SRC-TGT[:reverse]]",
                   help="one more test set, scored in its own column group (repeatable): a .tsv, .jsonl or PREFIX "
                        "of PREFIX.SRC/.TGT, optionally @SRC-TGT for its languages (:reverse translates TGT->SRC); "
                        "NAME=@hu-en is the run's test split in that direction")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distilmt", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--quiet", action="store_true", help="plain log lines only (no panels)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="the whole job: data, teacher, students, evaluation, report")
    _config_args(p); _run_dir_arg(p); _resume_arg(p)

    p = sub.add_parser("prepare-data", help="build the corpus splits and the tokenizer")
    _config_args(p); _run_dir_arg(p)

    p = sub.add_parser("train-teacher", help="train the teacher (or take --teacher as it is)")
    _config_args(p); _run_dir_arg(p); _resume_arg(p)

    p = sub.add_parser("train-teacher-lora", help="fine-tune the teacher with LoRA adapters on the parallel data "
                                                  "into RUN_DIR/teacher-lora (settings under lora)")
    _config_args(p); _run_dir_arg(p); _resume_arg(p)

    p = sub.add_parser("study", help="base vs LoRA vs hard-label vs soft-label KD with one budget per student: "
                                     "RUN_DIR/study.json, study.md, report; --sweep for an ablation")
    _config_args(p); _run_dir_arg(p); _resume_arg(p)
    p.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="one study per value, e.g. --sweep distill.temperature=1,2,4 or --sweep lora.rank=4,8,16 "
                        "(repeat to change several keys together); writes RUN_DIR/sweep-KEY.md/.json/.png")
    p.add_argument("--rows", help="comma-separated rows to train and evaluate (default: all seven)")

    p = sub.add_parser("cache-teacher", help="store the teacher's top-k probabilities on the training set once, "
                                             "so KD never runs the teacher (distill.teacher_cache=true uses it)")
    _config_args(p); _run_dir_arg(p)
    p.add_argument("--rebuild", action="store_true", help="delete the run's teacher cache and build it again")

    p = sub.add_parser("generate-labels", help="the teacher translates the training sources into RUN_DIR/distilled/ "
                                               "(sequence-level KD labels; settings under seqkd)")
    _config_args(p); _run_dir_arg(p)
    p.add_argument("--rebuild", action="store_true", help="delete the run's distilled corpus and generate it again")

    p = sub.add_parser("distill", help="train the no-KD baseline student and the KD student (and student-seqkd "
                                       "when seqkd.enabled)")
    _config_args(p); _run_dir_arg(p); _resume_arg(p)
    p.add_argument("--only", choices=["baseline", "kd", "seqkd", "progressive"],
                   help="train just one of the students (progressive: the chain of distill.progressive_factor)")

    p = sub.add_parser("evaluate", help="evaluate every trained model of the run on its test set")
    _run_dir_arg(p)
    _test_set_arg(p)

    p = sub.add_parser("compare", help="evaluate any Hugging Face or CTranslate2 model directories side by side")
    p.add_argument("models", nargs="+", metavar="MODEL_DIR", help="model directories (NAME=DIR names a row)")
    p.add_argument("--out", required=True, help="where comparison.json/csv/md and report.md/html go")
    p.add_argument("--test", help="a test corpus (.tsv, .jsonl or PREFIX of PREFIX.src/.tgt); "
                                  "default: the test split of --run-dir")
    p.add_argument("--direction", help="SRC-TGT languages of --test and of --test-set files without @SRC-TGT "
                                       "(default: the models' run direction, else en-hu)")
    _run_dir_arg(p)
    _test_set_arg(p)
    p.add_argument("--reference", help="row that compression, speed-up and retention refer to (default: first)")
    p.add_argument("--beams", type=int, default=4, help="beam size")
    p.add_argument("--max-sentences", type=int, default=0, help="use only the first N test sentences")
    p.add_argument("--speed-sentences", type=int, default=64,
                   help="test sentences timed for speed and memory, each model in its own process (0 = skip)")
    p.add_argument("--speed-rounds", type=int, default=3,
                   help="interleaved timing rounds (each round times every model once; each figure is the model's "
                        "best round, the speed-up the ratio of the best rounds)")

    p = sub.add_parser("translate", help="translate --text or stdin with models of a run (or any model dirs); "
                                         "--interactive tries sentences on them side by side")
    p.add_argument("models", nargs="*", metavar="MODEL",
                   help="model names inside --run-dir (teacher, student-kd, student-kd-ct2-int8, ...) or model "
                        "directories, NAME=DIR names one (default: student-kd; with --interactive every model of "
                        "--run-dir)")
    _run_dir_arg(p)
    p.add_argument("--text", action="append", help="a sentence to translate (repeatable); default: read stdin")
    p.add_argument("--beams", type=int, default=4, help="beam size")
    p.add_argument("-i", "--interactive", action="store_true",
                   help="a prompt loop: type a sentence, see each model's translation and time; an empty line, "
                        ":q or end of input (Ctrl-D) quits")

    p = sub.add_parser("export", help="export a model to CTranslate2 or a plain Hugging Face directory")
    p.add_argument("model_dir"); p.add_argument("out_dir")
    p.add_argument("--format", choices=["ctranslate2", "hf"], default="ctranslate2")
    p.add_argument("--quantization", default="int8", help="int8, int8_float32, int16, float16, float32 ...")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty OUT_DIR")

    p = sub.add_parser("methods", help="compare distillation methods: the same student, data and updates per "
                                       "method and seed, against the no-KD baseline (methods.json/md/png)")
    _config_args(p)
    p.add_argument("--run-dir", default="runs/methods", help="the study's run directory (default: runs/methods)")
    p.add_argument("--methods", help="comma-separated methods (default: kd,reverse_kl,temp_schedule,hidden,"
                                     "attention,on_policy,mutual,progressive; also jsd, skew_kl, tvd, "
                                     "weight_schedule, ensemble); the baseline is always trained")
    p.add_argument("--seeds", default="1,2", help="comma-separated student seeds (default: 1,2)")
    p.add_argument("--steps", type=int, default=0, help="updates of every student (default: the preset's)")
    p.add_argument("--test-sentences", type=int, default=0, help="test sentences evaluated (default: the preset's)")
    _resume_arg(p)

    p = sub.add_parser("value", help="does distillation pay? the whole job once per student seed with one teacher "
                                     "(RUN_DIR/seed-S/), the twin and KD student compared: RUN_DIR/value.json, value.md")
    _config_args(p)
    p.add_argument("--run-dir", default="runs/value", help="where the seeds' runs go (default: runs/value)")
    p.add_argument("--seeds", default="1,2", help="comma-separated student seeds (default: 1,2)")
    _resume_arg(p)

    sub.add_parser("presets", help="list the presets and what each costs")
    return parser


def _dotted_overrides(extra: list[str]) -> list[str] | None:
    """``--monitor.language zh`` / ``--distill.temperature=2`` as ``section.field=value`` overrides (None if not)."""
    overrides, i = [], 0
    while i < len(extra):
        token = extra[i]
        if not token.startswith("--") or "." not in token.split("=", 1)[0]:
            return None
        if "=" in token:
            overrides.append(token[2:])
            i += 1
        elif i + 1 < len(extra) and not extra[i + 1].startswith("--"):
            overrides.append(f"{token[2:]}={extra[i + 1]}")
            i += 2
        else:
            return None
    return overrides


STARTS_A_RUN = ("run", "prepare-data", "train-teacher", "train-teacher-lora", "study")
"""The commands that may create a run directory; the others need one that exists."""


def _resolve_config(args, base: Path | None = None):
    """The config the flags describe: ``base`` (a run's saved config.yaml) or the preset / --config file, then the
    --set overrides and the --direction/--corpus/--teacher shorthands (refused when they contradict a --set)."""
    shorthand = []
    if args.direction:
        if "-" not in args.direction:
            raise ConfigError(f"--direction {args.direction}: write it as SRC-TGT, e.g. en-hu or hu-en")
        src, tgt = args.direction.split("-", 1)
        shorthand += [("--direction", f"data.source_lang={src}"), ("--direction", f"data.target_lang={tgt}")]
    if args.corpus:
        shorthand.append(("--corpus", f"data.corpus={args.corpus}"))
    if args.teacher:
        shorthand.append(("--teacher", f"teacher.path={args.teacher}"))
    given = {item.split("=", 1)[0].strip(): item for item in args.overrides}
    for flag, item in shorthand:
        key, value = item.split("=", 1)
        if key in given and given[key].split("=", 1)[1].strip() != value:
            raise ConfigError(f"{key}: {flag} says {value!r} but --set {given[key]}; give it once")
    overrides = [*args.overrides, *(item for _, item in shorthand)]
    if base is not None and not (args.preset or args.config):
        return load_config(file=base, overrides=overrides)
    return load_config(args.preset, args.config, overrides)


def _check_progressive(args, cfg) -> None:
    if getattr(args, "only", None) == "progressive" and not cfg.distill.progressive_factor:
        raise ConfigError("distill.progressive_factor: is 0 (off); set it (e.g. 0.7) to train the progressive chain")


def _config_for_stage(args):
    """The run's config: the saved one (with any --set on top: a change is refused by open_run, naming the key), or
    for a new run directory the one the flags describe — only for the commands that start a run."""
    run_dir = Path(args.run_dir)
    saved = run_dir / "config.yaml"
    given = args.preset or args.config or args.overrides or args.direction or args.corpus or args.teacher
    if saved.is_file():
        return open_run(run_dir, _resolve_config(args, base=saved) if given else None)
    cfg = _resolve_config(args)  # a wrong value is reported first, whatever the command
    _check_progressive(args, cfg)
    if args.command not in STARTS_A_RUN:
        raise RunDirError(f"{run_dir}: no run here yet (no config.yaml, no trained teacher yet); start it with "
                          f"`distilmt run` or `distilmt train-teacher --run-dir {run_dir}` and a --preset or --config")
    return open_run(run_dir, cfg)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    dotted = _dotted_overrides(extra)
    if dotted is None or (dotted and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if dotted:
        args.overrides += dotted
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # basicConfig is a no-op when the root logger already has handlers (an embedding app, pytest): set our own
    # level so progress lines and monitor summaries still reach run.log
    logging.getLogger("distilmt").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    for noisy in ("transformers", "accelerate", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("transformers.generation.utils").setLevel(logging.ERROR)  # max_new_tokens vs max_length
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        if not is_main():  # under torchrun the other ranks' tables and summaries would repeat rank 0's
            with open(os.devnull, "w", encoding="utf-8") as quiet, contextlib.redirect_stdout(quiet):
                return _dispatch(args)
        return _dispatch(args)
    except KeyboardInterrupt:
        again = "the same command" + ("" if args.command in ("generate-labels", "cache-teacher") else " and --resume")
        print(f"distilmt: interrupted; continue with {again}", file=sys.stderr)
        return 130
    except (UserError, FileNotFoundError) as exc:  # a user's mistake is one line; a bug keeps its traceback
        print(f"distilmt: error: {exc}", file=sys.stderr)
        return 2


def _dispatch(args) -> int:
    from .recipes import pipeline

    if args.command == "presets":
        return _print_presets()
    if args.command == "export":
        return _export(args)
    if args.command == "translate":
        return _translate(args)
    if args.command == "compare":
        return _compare(args)
    if args.command == "methods":
        return _methods(args)
    if args.command == "value":
        return _value(args)
    run_dir = Path(args.run_dir)
    if args.command == "evaluate":
        from .evaluation.testsets import load_test_set

        cfg = pipeline.open_run(run_dir)
        test_sets = [load_test_set(item, cfg.data.direction, run_dir) for item in args.test_sets]
        rows = pipeline.evaluate(cfg, run_dir, test_sets=test_sets)
        pipeline.report(cfg, run_dir)
        _print_table(rows, run_dir / "metrics.json")
        return 0
    if args.quiet:
        os.environ["DISTILMT_QUIET"] = "1"
    with main_first("opening the run directory"):  # under torchrun: rank 0 writes config.yaml, the others read it
        cfg = _config_for_stage(args)
    _log_to_file(run_dir / "run.log")
    if args.command == "run":
        rows = pipeline.run(cfg, run_dir, resume=args.resume)
        _print_table(rows, run_dir / "metrics.json")
        print(f"\nEverything is in {run_dir}/ (report.md, report.html, metrics.json, tb/ for TensorBoard)")
    elif args.command == "prepare-data":
        splits = pipeline.prepare_data(cfg, run_dir)
        print(f"data: {len(splits.train)} train, {len(splits.dev)} dev, {len(splits.test)} test pairs in {run_dir}/data")
    elif args.command == "train-teacher":
        pipeline.prepare_data(cfg, run_dir)
        pipeline.train_teacher(cfg, run_dir, resume=args.resume)
    elif args.command == "train-teacher-lora":
        pipeline.prepare_data(cfg, run_dir)
        pipeline.train_teacher(cfg, run_dir, resume=args.resume)
        out = pipeline.train_teacher_lora(cfg, run_dir, resume=args.resume)
        print(f"teacher-lora: merged model in {out}, adapters in {out / 'adapter'}")
    elif args.command == "study":
        return _study(args, cfg, run_dir)
    elif args.command == "cache-teacher":
        stats = pipeline.cache_teacher(cfg, run_dir, rebuild=args.rebuild)
        print(f"teacher cache: {stats['n_tokens']:,} target tokens, top-{stats['k']}, "
              f"{stats['bytes_per_token']:.1f} bytes per target token, {stats['total_bytes'] / 1e6:.1f} MB "
              f"in {run_dir / 'teacher-cache'}")
    elif args.command == "generate-labels":
        stats = pipeline.generate_labels(cfg, run_dir, rebuild=args.rebuild)
        filtered = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in stats["filtered"].items())
        speed = f", {stats['sentences_per_s']:.1f} sentences/s" if "sentences_per_s" in stats else ""
        print(f"distilled corpus: {stats['kept']} of {stats['sources']} pairs kept (filtered: {filtered}){speed} "
              f"in {run_dir / 'distilled' / 'train.tsv'}")
    elif args.command == "distill":
        names = {"baseline": ("student-baseline",), "kd": ("student-kd",), "seqkd": (pipeline.SEQKD_STUDENT,),
                 "progressive": (), None: pipeline.student_names(cfg)}[args.only]
        _check_progressive(args, cfg)
        pipeline.distill(cfg, run_dir, names, resume=args.resume)
        if cfg.distill.progressive_factor and args.only in ("progressive", None):
            pipeline.distill_progressive(cfg, run_dir, resume=args.resume)
    return 0


def _study(args, cfg, run_dir: Path) -> int:
    from .recipes import study

    rows = tuple(r.strip() for r in args.rows.split(",") if r.strip()) if args.rows else study.ROWS
    if args.sweep:
        summary = study.sweep(cfg, run_dir, args.sweep, rows, resume=args.resume)
        label = study._safe(",".join(summary["keys"]))
        print(study.sweep_markdown(summary))
        print(f"Written to {run_dir}/sweep-{label}.md, .json and .png (one study per value in {run_dir}/sweeps/)")
        return 0
    _print_table(study.run_study(cfg, run_dir, rows, resume=args.resume))
    print(f"\nWritten to {run_dir}/ (study.json, study.md, report.md, report.html)")
    return 0


def _log_to_file(path: Path) -> None:
    """Every stage appends its plain log lines (training progress, monitor summaries) to RUN_DIR/run.log."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "distilmt_run_log", False)]:
        root.removeHandler(old)
        old.close()
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.distilmt_run_log = True
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root.addHandler(handler)


def _print_table(rows: list[dict], metrics_file: Path | None = None) -> None:
    """The comparison table; with a run's metrics.json, then the verdict on KD vs its no-KD twin."""
    from rich.console import Console

    from .evaluation.compare import format_table
    from .evaluation.report import kd_verdict

    console = Console()
    if not console.is_terminal:  # a log file or a pipe: no need to squeeze 16 columns into 80 characters
        console = Console(width=200)
    console.print(format_table(rows))
    if metrics_file is not None and metrics_file.is_file():
        verdict = kd_verdict(json.loads(metrics_file.read_text(encoding="utf-8")))
        if verdict:
            console.print(verdict, highlight=False)


def _print_presets() -> int:
    from rich.console import Console
    from rich.table import Table


    table = Table(title="distilmt presets")
    from .recipes.methods import active_methods

    for col in ("preset", "teacher", "student", "teacher steps", "student steps", "T", "alpha/beta", "methods",
                "what it is for"):
        table.add_column(col)
    for name in PRESETS:
        c = load_config(name)
        t = c.teacher
        teacher = f"d{t.d_model} {t.encoder_layers}+{t.decoder_layers}" if not t.path else t.path
        student = f"depth x{c.student.depth_ratio} width x{c.student.width_ratio}"
        steps = lambda tc: str(tc.max_steps) if tc.max_steps else f"{tc.epochs:g} epochs"  # noqa: E731
        table.add_row(name, teacher, student, steps(c.teacher_train), steps(c.student_train),
                      f"{c.distill.temperature:g}", f"{c.distill.alpha:g}/{c.distill.beta:g}",
                      active_methods(c.distill), c.description)
    Console().print(table)
    return 0


def _methods(args) -> int:
    from rich.console import Console

    from .config.run import parse_seeds
    from .recipes.methods import format_table, parse_methods, run_study, study_overrides

    methods, seeds = parse_methods(args.methods), parse_seeds(args.seeds)
    if args.quiet:
        os.environ["DISTILMT_QUIET"] = "1"
    run_dir = Path(args.run_dir)
    args.overrides += study_overrides(args.steps, args.test_sentences)
    saved = run_dir / "config.yaml"
    if saved.is_file() and not (args.preset or args.config or args.direction or args.corpus or args.teacher):
        # continue the study with its own settings
        cfg = open_run(run_dir, load_config(file=saved, overrides=args.overrides))
    else:
        cfg = open_run(run_dir, _resolve_config(args))
    _log_to_file(run_dir / "run.log")
    rows = run_study(cfg, run_dir, methods, seeds, resume=args.resume)
    teacher = json.loads((run_dir / "methods.json").read_text(encoding="utf-8")).get("teacher")
    Console(width=None if Console().is_terminal else 160).print(format_table(rows, teacher))
    print(f"\n{len(rows)} rows in {run_dir}/methods.json (table: methods.md, plot: methods.png)")
    return 0


def _value(args) -> int:
    from .config.run import parse_seeds
    from .recipes.value import run_seeds

    seeds = parse_seeds(args.seeds)
    if args.quiet:
        os.environ["DISTILMT_QUIET"] = "1"
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _log_to_file(run_dir / "run.log")
    run_seeds(_resolve_config(args), run_dir, seeds, resume=args.resume)
    print((run_dir / "value.md").read_text(encoding="utf-8"))
    print(f"Written to {run_dir}/value.json and value.md (each seed's run in {run_dir}/seed-S/)")
    return 0


def _export(args) -> int:
    from .export import export_ctranslate2, export_hf

    if args.format == "ctranslate2":
        out = export_ctranslate2(args.model_dir, args.out_dir, quantization=args.quantization, force=args.force)
    else:
        out = export_hf(args.model_dir, args.out_dir, force=args.force)
    print(f"exported {args.model_dir} -> {out}")
    return 0


def _compare(args) -> int:
    from .evaluation.testsets import load_test_set, model_direction, split_direction
    from .recipes import pipeline

    if args.test:
        from .data.readers import read_parallel

        paths = [item.rpartition("=")[2] for item in args.models]
        direction = args.direction or next(filter(None, map(model_direction, paths)), None) or "en-hu"
        src, tgt = split_direction(direction)
        pairs, _ = read_parallel(args.test, src_lang=src, tgt_lang=tgt)
        target_lang = tgt
    else:
        from .data.corpus import load_splits

        cfg = pipeline.open_run(Path(args.run_dir))
        pairs, target_lang = load_splits(Path(args.run_dir) / "data").test, cfg.data.target_lang
        direction = cfg.data.direction
    test_sets = [load_test_set(item, args.direction or direction, args.run_dir) for item in args.test_sets]
    if args.max_sentences:
        pairs = pairs[: args.max_sentences]
        test_sets = [t.head(args.max_sentences) for t in test_sets]
    rows = pipeline.compare(args.models, args.out, pairs, target_lang, args.reference, args.beams,
                            speed_sentences=args.speed_sentences, direction=direction, test_sets=test_sets,
                            speed_rounds=args.speed_rounds)
    _print_table(rows)
    print(f"\nWritten to {args.out}/ (comparison.json, comparison.csv, comparison.md, report.md, report.html)")
    return 0


def _translate_models(args) -> list[tuple[str, Path]]:
    """(name, directory) of each model named on the command line, or every model of --run-dir."""

    run_dir = Path(args.run_dir)
    exported = run_dir / "export" / "student-kd-ct2-int8"
    names = list(args.models)
    if not names and args.interactive:
        names = [d.name for d in sorted(run_dir.iterdir()) if is_complete(d) and (d / "config.json").is_file()]             if run_dir.is_dir() else []
        names = sorted(names, key=lambda n: (n != "teacher", n)) + (["student-kd-ct2-int8"] if exported.is_dir() else [])
        if not names:
            raise RunDirError(f"{run_dir}: no models to try; name model directories or point --run-dir at a run")
    models = []
    for item in names or ["student-kd"]:
        name, _, given = item.rpartition("=") if "=" in item else (item, "", item)
        path = Path(given)
        if not path.is_dir():
            path = exported if given == "student-kd-ct2-int8" else run_dir / given
        if not path.is_dir():
            raise RunDirError(f"{given}: no such model directory, and none named so in {run_dir}")
        models.append((Path(name).name or name, path))
    return models


def _translate(args) -> int:
    from .models.translators import open_model

    try:
        models = [(name, open_model(path)) for name, path in _translate_models(args)]
    except ModelLoadError as exc:
        raise RunDirError(str(exc)) from None
    if args.interactive:
        return _interactive(models, args.beams)
    sentences = args.text or [line.strip() for line in sys.stdin if line.strip()]
    if len(models) == 1:
        for line in models[0][1].translate(sentences, num_beams=args.beams):
            print(line)
        return 0
    outputs = [translator.translate(sentences, num_beams=args.beams) for _, translator in models]
    width = max(len(name) for name, _ in models)
    for i, sentence in enumerate(sentences):
        print(f"{'source':<{width}}  {sentence}")
        for (name, _), out in zip(models, outputs):
            print(f"{name:<{width}}  {out[i]}")
        print()
    return 0


def _interactive(models: list, num_beams: int) -> int:
    """Read sentences until end of input, an empty line or ':q'; print every model's translation and time."""
    import time

    width = max(len(name) for name, _ in models)
    print(f"Type a sentence; {len(models)} model(s): {', '.join(n for n, _ in models)}. "
          "Empty line, :q or Ctrl-D quits.")
    while True:
        try:
            line = input("> ").strip()
        except EOFError:
            print()
            break
        if not line or line == ":q":
            break
        for name, translator in models:
            start = time.perf_counter()
            output = translator.translate([line], num_beams=num_beams)[0]
            print(f"{name:<{width}}  {output}  ({1000 * (time.perf_counter() - start):.0f} ms)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
