"""The whole run's configuration (:class:`RunConfig`) and how it is read: presets, YAML files, ``key=value``
overrides, and saved back next to every run."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import get_type_hints

import yaml

from ..errors import ConfigError
from . import sections
from .distill import DistillConfig
from .fields import help_field as _help

PRESET_DIR = Path(__file__).parent.parent / "presets"
PRESETS = ("quick", "conservative", "balanced", "aggressive", "quality")


@dataclass
class RunConfig:
    name: str = _help("preset or run name", "custom")
    description: str = _help("one line on what this configuration is for", "")
    data: sections.DataConfig = _help("corpus and tokenizer", factory=sections.DataConfig)
    teacher: sections.TeacherConfig = _help("the teacher: a directory to load, or an architecture to train",
                                            factory=sections.TeacherConfig)
    student: sections.StudentConfig = _help("how the student is derived from the teacher",
                                            factory=sections.StudentConfig)
    teacher_train: sections.TrainConfig = _help("training recipe of a teacher trained here",
                                                factory=sections.TrainConfig)
    student_train: sections.TrainConfig = _help("training recipe of both students (baseline and KD)",
                                                factory=sections.TrainConfig)
    distill: DistillConfig = _help("token-level KD", factory=DistillConfig)
    seqkd: sections.SeqKDConfig = _help("sequence-level KD: the teacher's translations as labels",
                                        factory=sections.SeqKDConfig)
    eval: sections.EvalConfig = _help("final evaluation", factory=sections.EvalConfig)
    monitor: sections.MonitorConfig = _help("the visual distillation monitor", factory=sections.MonitorConfig)
    lora: sections.LoRAConfig = _help("LoRA adapters (peft): teacher-lora, LoRA students", factory=sections.LoRAConfig)
    study: sections.StudyConfig = _help("`distilmt study`: what the comparison rows learn from",
                                        factory=sections.StudyConfig)
    prompt: sections.PromptConfig = _help("translation prompt of causal-LM teachers and students",
                                          factory=sections.PromptConfig)

    def to_dict(self) -> dict:
        return asdict(self)


def from_dict(cls, values: dict | None, where: str = ""):
    """Build a (nested) config dataclass from a dict, rejecting unknown keys with a clear message."""
    values = dict(values or {})
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    old_names = {n for n, hint in hints.items() if isinstance(hint, dataclasses.InitVar)}  # e.g. train.bf16
    unknown = sorted(set(values) - known - old_names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"{prefix}{unknown[0]}: unknown setting; known ones are {', '.join(sorted(known))}")
    kwargs = {}
    for name, value in values.items():
        kind = hints[name].type if name in old_names else hints[name]
        key = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(kind):
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a mapping of settings, got {value!r}")
            kwargs[name] = from_dict(kind, value, key)
        else:
            kwargs[name] = _coerce(kind, value, key)
    try:
        return cls(**kwargs)
    except ConfigError as exc:  # a section used under several names (TrainConfig) names the one meant
        section = getattr(cls, "SECTION", None)
        if where and section and str(exc).startswith(f"{section}."):
            raise ConfigError(f"{where}.{str(exc)[len(section) + 1:]}") from None
        raise


def _coerce(kind, value, key):
    if typing.get_origin(kind) in (typing.Union, types.UnionType):  # X | None: None stays None, else an X
        inner = [a for a in typing.get_args(kind) if a is not type(None)]
        if value is None and len(inner) < len(typing.get_args(kind)):
            return None
        return _coerce(inner[0], value, key) if len(inner) == 1 else value
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if kind in (int, float):
        if isinstance(value, bool) or value is None:
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        if kind is int:
            if number != int(number):
                raise ConfigError(f"{key}: expected a whole number, got {value!r}")
            return int(number)
        return number
    if kind is str:
        return str(value)
    return value


TRAIN_SECTIONS = ("teacher_train", "student_train")


def set_override(values: dict, dotted: str, raw: str) -> None:
    """Apply one ``section.field=value`` command-line override to a config dict (YAML-typed value).

    ``teacher_train.bf16`` / ``student_train.bf16`` true or false, the old name of ``precision``, sets precision
    bf16 / fp32 (so it overrides the precision of a preset or file, as it overrode their bf16)."""
    path = dotted.split(".")
    node = values
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: '{part}' is not a section")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:  # e.g. >>hun<< (">" starts a YAML block scalar) or an unquoted {source}
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        quoted = raw.replace("'", "''")
        raise ConfigError(f"{dotted}: {raw!r} is not a YAML value ({problem}); quote it, e.g. "
                          f"--set \"{dotted}='{quoted}'\"") from None
    if len(path) == 2 and path[0] in TRAIN_SECTIONS and path[1] == "bf16" and isinstance(value, bool):
        node.pop("bf16", None)
        node["precision"] = "bf16" if value else "fp32"
        return
    node[path[-1]] = value


def parse_seeds(text: str) -> list[int]:
    """``--seeds 1,2``: the seeds in order, each once."""
    try:
        seeds = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        raise ConfigError(f"--seeds: '{text}' is not a comma-separated list of whole numbers, e.g. 1,2")
    return list(dict.fromkeys(seeds))


def load_config(preset: str | None = None, file: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Resolve a configuration: a preset or a YAML file, then ``key=value`` overrides, then validation."""
    if preset and file:
        raise ConfigError("give either --preset or --config, not both")
    if file:
        path = Path(file)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
    else:
        name = preset or "quick"
        path = PRESET_DIR / f"{name}.yaml"
        if not path.is_file():
            raise ConfigError(f"preset '{name}' does not exist; choose one of {', '.join(PRESETS)}")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML ({problem}); fix that line") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}': write it as section.field=value, e.g. distill.temperature=2")
        key, raw = item.split("=", 1)
        set_override(values, key.strip(), raw.strip())
    return from_dict(RunConfig, values)


def save_config(config: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8")

