"""Every mistake a user can fix is a :class:`UserError`: the CLI catches this one base and prints its message as
one line (exit status 2), never a traceback. Each message names the file, directory or setting and what to do."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix; the message is one sentence naming the place and the fix."""


class ConfigError(UserError, ValueError):
    """A configuration value a user has to change; the message names the field."""


class CorpusError(UserError, ValueError):
    """A corpus file that cannot be read as parallel text."""


class ModelError(UserError, ValueError):
    """A model directory or a teacher/student pairing a user has to fix."""


class ModelLoadError(ModelError):
    """A model directory that cannot be opened; the message names the directory and what to do."""


class RunDirError(UserError, ValueError):
    """A run directory that cannot be used as asked."""


class CacheError(UserError, ValueError):
    """A teacher cache that is missing, incomplete or made from other data, tokenizer or teacher."""


class LabelsError(UserError, ValueError):
    """A distilled corpus (sequence-level KD labels) that is stale, incomplete or unusable."""


class TrainingDiverged(UserError, RuntimeError):
    """A training whose loss or gradients became non-finite more often than allowed; nothing was marked complete."""


class DiskFull(UserError, OSError):
    """The disk filled up while a stage wrote its files; what was complete before is kept."""


class ExportError(UserError, RuntimeError):
    """An export that cannot be done as asked (output directory, quantization, a converter failure)."""


class SemanticUnavailable(UserError, RuntimeError):
    """Semantic similarity was asked for but its optional packages are missing (the message says what to install)."""


class RankError(UserError, RuntimeError):
    """Under torchrun: rank 0 failed in a step the other ranks were waiting for (rank 0's own error says why)."""
