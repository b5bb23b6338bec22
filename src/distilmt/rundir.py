"""The run directory: its saved configuration, completion markers, fingerprints and atomic writes.

Every stage reads and writes one run directory. A stage whose output is complete (a ``.complete`` marker written
after its last file) is skipped. A store built from inputs (teacher cache, distilled corpus) carries the
fingerprints of those inputs and is refused when they differ (:func:`check_fingerprint`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import torch
from transformers import AutoTokenizer

from .config import RunConfig, load_config, save_config
from .errors import CacheError, RunDirError


# -- run directory ------------------------------------------------------------------------------------
def open_run(run_dir: str | Path, config: RunConfig | None = None) -> RunConfig:
    """Create ``run_dir`` with ``config.yaml``, or load the config already there.

    A run directory keeps one configuration: asking for a different one is refused rather than mixing
    models trained under two settings.
    """
    run_dir = Path(run_dir)
    saved = run_dir / "config.yaml"
    if run_dir.is_dir():
        check_writable(run_dir)
    if saved.is_file():
        existing = load_config(file=saved)
        if config is not None and config.to_dict() != existing.to_dict():
            changed = _first_difference(existing.to_dict(), config.to_dict())
            raise RunDirError(f"{run_dir}: holds a run made with other settings ({changed}); "
                              "use a new --run-dir, or delete this one to start over")
        return existing
    if config is None:
        raise RunDirError(f"{run_dir}: no config.yaml here; start with `distilmt run` or `distilmt prepare-data` "
                          "and a --preset or --config")
    for key, path in (("teacher.path", config.teacher.path), ("student.path", config.student.path)):
        if path and not Path(path).is_dir():  # checked before anything is written, so the run dir is not stuck
            raise RunDirError(f"{key} {path}: no such directory; point --teacher / --set {key}= at a local Hugging "
                              "Face model directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, saved)
    return config


def check_writable(directory: Path) -> None:
    """Refuse (one RunDirError line) a directory this process cannot write into, before any work is done there."""
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise RunDirError(f"{directory}: cannot write here ({exc.strerror or exc}); use a --run-dir you can write "
                          "to, or free space / fix its permissions") from None


def _first_difference(a: dict, b: dict, prefix: str = "") -> str:
    for key in sorted(set(a) | set(b)):
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            found = _first_difference(a[key], b[key], f"{prefix}{key}.")
            if found:
                return found
        elif a.get(key) != b.get(key):
            return f"{prefix}{key}: {a.get(key)!r} there, {b.get(key)!r} now"
    return ""


def is_complete(stage_dir: Path) -> bool:
    return (Path(stage_dir) / ".complete").is_file()


def mark_complete(stage_dir: Path, drop_checkpoints: bool = False, **info) -> None:
    """Write ``stage_dir/.complete`` (atomically, last); with ``drop_checkpoints`` then remove the training's
    ``checkpoints/`` (optimizer state, several times the model's size): a finished stage is the model, its
    tokenizer and generation config only, and is never resumed."""
    write_text_atomic(Path(stage_dir) / ".complete", json.dumps({"finished": time.time(), **info}, indent=1))
    if drop_checkpoints:
        shutil.rmtree(Path(stage_dir) / "checkpoints", ignore_errors=True)


def load_tokenizer(run_dir: Path):

    tok_dir = Path(run_dir) / "tokenizer"
    if not is_complete(tok_dir):
        raise RunDirError(f"{run_dir}: no tokenizer yet; run `distilmt prepare-data --run-dir {run_dir}` first")
    return AutoTokenizer.from_pretrained(str(tok_dir))


def require_teacher(run_dir: Path) -> None:
    if not is_complete(run_dir / "teacher"):
        raise RunDirError(f"{run_dir}: no trained teacher yet; run `distilmt train-teacher --run-dir {run_dir}`")


@contextmanager
def atomic_open(path: str | Path, binary: bool = False) -> Iterator[TextIO]:
    """A file (UTF-8 text, or bytes with ``binary``) that appears at ``path`` only once it is completely written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    options = {"mode": "wb"} if binary else {"mode": "w", "encoding": "utf-8", "newline": "\n"}
    try:
        with open(tmp, **options) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_open`: the file is whole or not there."""
    with atomic_open(path) as handle:
        handle.write(text)
    return Path(path)


# -- fingerprints ----------------------------------------------------------------------------------------------------


# -- fingerprints -------------------------------------------------------------------------------------
def pairs_fingerprint(pairs: Sequence[tuple[str, str]], max_tokens: int = 0) -> str:
    """sha256 of the training pairs in order, and of the length limit that decides which of them are kept."""
    digest = hashlib.sha256(f"max_tokens={int(max_tokens)}\n".encode())
    for source, target in pairs:
        digest.update(source.encode("utf-8") + b"\t" + target.encode("utf-8") + b"\n")
    return digest.hexdigest()


def teacher_fingerprint(teacher) -> str:
    """sha256 of the teacher's weights: the weight files of a model directory, or an in-memory model's tensors.

    The pipeline fingerprints ``RUN_DIR/teacher/*.safetensors`` (reading bytes, never loading the model); a
    cache built from an in-memory model must be opened with the fingerprint of that same model.
    """
    digest = hashlib.sha256()
    if isinstance(teacher, (str, Path)):
        path = Path(teacher)
        files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
        if not files:
            raise CacheError(f"{path}: no model weights (*.safetensors or *.bin) to fingerprint the teacher by")
        for file in files:
            digest.update(file.name.encode())
            with open(file, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    digest.update(block)
        return digest.hexdigest()
    for name, tensor in sorted(teacher.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# -- fingerprint --------------------------------------------------------------------------------------
def sources_fingerprint(sources: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for source in sources:
        digest.update(source.encode("utf-8") + b"\n")
    return digest.hexdigest()


def check_fingerprint(where: Path, stored: dict, expected: dict, what: dict[str, str], error: type[Exception],
                      thing: str, hint: str) -> None:
    """Refuse (``error``, one sentence) a store whose recorded fingerprint differs from what it is used with now.

    ``what`` names, per fingerprint key checked, what differs ("other training pairs"); ``thing`` names the store
    ("teacher cache"); ``hint`` says how to rebuild it."""
    for key, differs in what.items():
        if stored.get(key) != expected.get(key):
            raise error(f"{where}: this {thing} was made from {differs} than the ones it is used with now "
                        f"(fingerprint mismatch); {hint}")
