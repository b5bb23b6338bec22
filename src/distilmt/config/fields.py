"""Field helpers shared by every config section: help text in the field's metadata, one-sentence checks."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any

from ..errors import ConfigError


def help_field(text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING):
    """A dataclass field whose metadata carries its help text (``distilmt presets``, the README)."""
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


def check(ok: bool, where: str, message: str) -> None:
    """Raise ConfigError ``where: message`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{where}: {message}")
