"""Typed configuration: one dataclass per concern, validated on construction; imports nothing else of distilmt
but :mod:`distilmt.errors`.

A preset (``presets/*.yaml``) is a serialised :class:`RunConfig`. Every field has a help text
(``field(metadata={"help": ...})``) and every user mistake is reported as one :class:`ConfigError`
sentence naming the field and what to do.
"""

from ..errors import ConfigError
from .distill import DIVERGENCES, SCHEDULES, DistillConfig
from .run import PRESET_DIR, PRESETS, RunConfig, from_dict, load_config, save_config, set_override
from .sections import (
           AUTO_EVAL_UPDATES,
           LR_SCHEDULES,
           MODEL_KINDS,
           PRECISIONS,
           STUDENT_SHAPES,
           DataConfig,
           EvalConfig,
           LoRAConfig,
           MonitorConfig,
           PromptConfig,
           SeqKDConfig,
           StudentConfig,
           StudyConfig,
           TeacherConfig,
           TrainConfig,
           template_problem,
)

__all__ = ["ConfigError", "DIVERGENCES", "SCHEDULES", "DistillConfig", "PRESET_DIR", "PRESETS", "RunConfig",
           "from_dict", "load_config", "save_config", "set_override", "AUTO_EVAL_UPDATES", "LR_SCHEDULES", "MODEL_KINDS", "PRECISIONS",
           "STUDENT_SHAPES",
           "DataConfig",
           "EvalConfig", "LoRAConfig", "MonitorConfig", "PromptConfig", "SeqKDConfig", "StudentConfig", "StudyConfig",
           "TeacherConfig", "TrainConfig", "template_problem"]
