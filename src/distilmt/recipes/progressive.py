"""Progressive distillation (method 8): a chain teacher -> intermediate -> ... -> student.

Stage k (1, 2, ...) has the student.* ratios ``max(target ratio, factor^k)`` for each of depth, decoder depth,
width and heads, so every dimension shrinks by ``distill.progressive_factor`` per stage until it reaches the
configured student's; the last stage is exactly the student of ``student.*``. A stage whose shape equals the
previous one (rounding to whole layers and heads) is dropped, and the chain ends at the first stage of the
target's shape. With attention KD (``distill.attention_weight``) an intermediate's head count is the one
nearest (by ratio) to the count its ratios give that divides or is divided by both the previous stage's and the
target's, so every stage's attention can be matched to its teacher's (8 heads -> 4: an intermediate has 8 or 4,
never 6). Each stage is taught by the previous stage's trained model (stage 1 by the teacher) with the
run's token-level KD settings (``distill.*``) and ``student_train`` budget, starts from the previous model's
spread-out layers when the widths match (``student.init_from_teacher``), is a resumable stage directory
(``.complete`` when done, ``resume=True`` continues its checkpoints) and is evaluated on dev and test.

    RUN_DIR/progressive/stage-1/ ...     intermediate students (plain Hugging Face directories)
    RUN_DIR/progressive/chain.json       one record per stage: shape, parameters, teacher, dev/test BLEU and chrF
    RUN_DIR/student-progressive/         the last stage: the target-size student
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path

from ..config.run import RunConfig
from ..config.sections import StudentConfig
from ..data.corpus import load_splits
from ..errors import ConfigError
from ..evaluation.compare import evaluate_models
from ..models.build import copy_teacher_weights, derive_student, student_shape
from ..models.loading import load_seq2seq
from ..ranks import is_main, on_main
from ..rundir import atomic_open, is_complete, load_tokenizer, mark_complete
from .stages import dev_subset, test_subset
from .student import train_student

log = logging.getLogger(__name__)

MAX_STAGES = 100  # factor^k falls below any target ratio long before this; a guard, not a limit users meet


def stage_configs(student: StudentConfig, factor: float) -> list[StudentConfig]:
    """The student.* ratios of stages 1, 2, ...: each ratio ``max(target, factor^k)``, until all are the target's.

    The last entry is ``student`` itself. Shapes are not deduplicated here (see :func:`plan_chain`)."""
    if not 0 < factor < 1:

        raise ConfigError(f"distill.progressive_factor: {factor!r} must be in (0, 1), e.g. 0.7")
    target = {"depth_ratio": student.depth_ratio, "decoder_depth_ratio": student.decoder_depth_ratio or student.depth_ratio,
              "width_ratio": student.width_ratio, "heads_ratio": student.heads_ratio}
    stages = []
    for k in range(1, MAX_STAGES + 1):
        ratio = factor**k
        if ratio <= min(target.values()) or k == MAX_STAGES:
            stages.append(student)
            return stages
        stages.append(dataclasses.replace(student, **{name: max(value, ratio) for name, value in target.items()}))
    raise AssertionError("unreachable")


def heads_match(a: int, b: int) -> bool:
    """Whether attention KD can match ``a`` and ``b`` heads: one count divides the other (heads averaged in groups or
    repeated, :func:`distilmt.losses.match_heads`)."""
    return max(a, b) % min(a, b) == 0


def stage_heads(ideal: int, previous: int, target: int) -> int:
    """The head count of an intermediate stage under attention KD: of the counts between ``target`` and
    ``previous`` (the stage's teacher) that match both, the nearest to ``ideal`` by ratio (a tie: the larger,
    the gentler step). ``ideal`` when none does (``previous`` and ``target`` do not match each other)."""
    candidates = [h for h in range(min(previous, target), max(previous, target) + 1)
                  if heads_match(h, previous) and heads_match(h, target)]
    if not candidates:
        return ideal
    return min(candidates, key=lambda h: (abs(math.log(h / ideal)), -h))


def plan_chain(teacher_config, student: StudentConfig, factor: float,
               match_heads: bool = False) -> list[tuple[StudentConfig, dict]]:
    """``[(stage ratios, shape), ...]`` of the chain's stages, the last one the target student.

    ``shape`` is :func:`distilmt.models.build.student_shape` of the teacher config (``d_model``, ``ffn``,
    ``heads``, ``enc``, ``dec``). A stage whose shape equals the previous one (or the teacher's) is dropped; the
    first stage of the target's shape ends the chain (as the target's own ratios). With ``match_heads`` (attention
    KD) an intermediate's heads are :func:`stage_heads` of its ratio's, its ``heads_ratio`` set to give them."""

    previous = student_shape(teacher_config, StudentConfig(1.0, 1.0, 1.0, 1.0))  # the teacher's own shape
    teacher_heads = previous["heads"]
    target = student_shape(teacher_config, student)
    chain = []
    for stage in stage_configs(student, factor):
        shape = student_shape(teacher_config, stage)
        if match_heads and shape != target:
            heads = stage_heads(shape["heads"], previous["heads"], target["heads"])
            if heads != shape["heads"]:
                stage = dataclasses.replace(stage, heads_ratio=heads / teacher_heads)
                shape = student_shape(teacher_config, stage)
        if shape == target:
            chain.append((student, target))
            return chain
        if shape != previous:
            chain.append((stage, shape))
            previous = shape
    raise AssertionError("the last stage is always the target")


def stage_dirs(n_stages: int, stage_root: Path, final_dir: Path) -> list[Path]:
    """Where each stage is written: ``stage_root/stage-k`` for the intermediates, ``final_dir`` for the last."""
    return [Path(stage_root) / f"stage-{k}" for k in range(1, n_stages)] + [Path(final_dir)]


def train_chain(cfg: RunConfig, run_dir: Path, stage_root: Path, final_dir: Path, resume: bool = False,
                evaluate: bool = True) -> list[dict]:
    """Train (and evaluate) every stage of the chain in order; a complete stage is skipped.

    Stage 1 learns from ``run_dir/teacher``, stage k from stage k-1's directory. Returns one record per stage
    (also written to ``stage_root/chain.json``): ``stage``, ``dir``, ``teacher``, ``shape``, ``params``,
    ``seconds`` and, with ``evaluate``, ``dev_bleu``, ``dev_chrf``, ``test_bleu``, ``test_chrf``, ``collapsed``.
    """

    run_dir, stage_root = Path(run_dir), Path(stage_root)
    teacher_dir = run_dir / "teacher"
    teacher_model, _ = load_seq2seq(teacher_dir)
    attention = cfg.distill.attention_weight > 0 and bool(cfg.distill.split("attention_kinds"))
    chain = plan_chain(teacher_model.config, cfg.student, cfg.distill.progressive_factor, match_heads=attention)
    dirs = stage_dirs(len(chain), stage_root, final_dir)
    log.info("progressive: %d stage(s), factor %g: %s", len(chain), cfg.distill.progressive_factor,
             " -> ".join(_describe(shape) for _, shape in chain))
    splits = load_splits(run_dir / "data") if evaluate or not all(is_complete(d) for d in dirs) else None
    tokenizer = load_tokenizer(run_dir)
    records, previous = [], teacher_dir
    for k, ((stage_cfg, shape), out) in enumerate(zip(chain, dirs), start=1):
        if is_complete(out):
            log.info("progressive stage %d (%s): complete, skipped", k, out)
            records.append(json.loads((out / ".complete").read_text()).get("record", {"stage": k, "dir": str(out)}))
        else:
            records.append(_train_stage(cfg, run_dir, k, stage_cfg, shape, teacher_model, previous, out, splits,
                                        tokenizer, resume, evaluate))
        previous = out
        if is_main():
            _write_chain(stage_root / "chain.json", records)
    return records


def _train_stage(cfg: RunConfig, run_dir: Path, k: int, stage_cfg: StudentConfig, shape: dict, teacher_model,
                 previous: Path, out: Path, splits, tokenizer, resume: bool, evaluate: bool) -> dict:

    previous_model, _ = load_seq2seq(previous)
    # The stage's shape comes from the original teacher's config (so the ratios are exact); its weights from
    # the previous stage, as derive_student would copy them from a teacher of that stage's size.
    student = derive_student(teacher_model, dataclasses.replace(stage_cfg, init_from_teacher=False),
                             seed=cfg.student_train.seed)
    same_width = shape["d_model"] == student_shape(previous_model.config, StudentConfig(1.0, 1.0, 1.0, 1.0))["d_model"]
    if cfg.student.init_from_teacher and same_width:
        copy_teacher_weights(previous_model, student, shape)
    log.info("progressive stage %d: %s (%s parameters), taught by %s", k, _describe(shape),
             f"{student.num_parameters():,}", previous)
    started = time.time()
    train_student(cfg, run_dir, f"progressive stage {k}", out, splits.train, student=student, teacher_dir=previous,
                  monitor=False, log_dir=run_dir / "tb" / f"progressive-{out.name}", resume=resume, complete=False)
    record = {"stage": k, "dir": str(out), "teacher": str(previous), "shape": shape,
              "teacher_params": previous_model.num_parameters(), "params": student.num_parameters(),
              "seconds": round(time.time() - started, 1)}
    del previous_model, student

    def finish() -> dict:  # under torchrun: rank 0 evaluates and marks the stage; the others get its record
        if evaluate:
            record.update(evaluate_stage(cfg, out, splits))
            log.info("progressive stage %d: dev BLEU %.2f, test BLEU %.2f", k, record["dev_bleu"], record["test_bleu"])
        mark_complete(out, drop_checkpoints=not cfg.student_train.keep_checkpoints, seconds=record["seconds"],
                      record=record)
        return record

    return on_main(finish, f"evaluating progressive stage {k}")


def evaluate_stage(cfg: RunConfig, model_dir: Path, splits) -> dict:
    """dev and test BLEU/chrF (eval.num_beams; dev: data.max_eval_sentences, test: data.max_test_sentences) and
    whether the test output collapsed."""

    out = {}
    for split, pairs in (("dev", dev_subset(cfg, splits)), ("test", test_subset(cfg, splits))):
        rows, _ = evaluate_models([(model_dir.name, model_dir)], [s for s, _ in pairs], [t for _, t in pairs],
                                  cfg.data.target_lang, num_beams=cfg.eval.num_beams, batch_size=cfg.eval.batch_size,
                                  max_new_tokens=cfg.eval.max_new_tokens, speed_sentences=0, semantic=False,
                                  max_source_tokens=cfg.eval.max_source_tokens)
        out[f"{split}_bleu"], out[f"{split}_chrf"] = rows[0]["bleu"], rows[0]["chrf"]
        if split == "test":
            out["collapsed"] = rows[0]["collapsed"]
    return out


def _describe(shape: dict) -> str:
    return f"d{shape['d_model']} {shape['enc']}+{shape['dec']} ffn{shape['ffn']} h{shape['heads']}"


def _write_chain(path: Path, records: list[dict]) -> None:

    with atomic_open(path) as handle:
        json.dump({"stages": records}, handle, indent=1)
