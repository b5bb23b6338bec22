"""Which mixed precision a training runs in: ``train.precision`` (auto, bf16, fp16, fp32) resolved against the device
the Trainer uses (the CUDA GPU when one is visible, else the CPU: ``use_cpu`` in :func:`~.loop.training_arguments`).

``auto`` is bf16 where the device computes it natively (a CUDA GPU of compute capability 8.0 or newer, or ROCm; a
CPU with AVX512-BF16 or AMX), else fp16 on a CUDA GPU, else fp32. An explicit value is used as given unless the
device cannot run it: bf16 on a GPU that transformers refuses it on, fp16 without a CUDA GPU; each is one
:class:`~distilmt.errors.ConfigError` line naming the key. (bf16 on a CPU without native support runs, emulated and
slowly, as it always did: it is allowed when asked for, never picked by auto.)
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ConfigError

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""/proc/cpuinfo flags of a CPU with native bf16 arithmetic (read when torch has no probe for them)."""


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), so bf16 autocast is fast, not emulated."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(callable(probe) for probe in probes):
        return any(probe() for probe in probes)
    try:  # a torch without the probes: the kernel's flags (Linux)
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return False
    return any(flag in flags for flag in CPU_BF16_FLAGS)


def resolve_precision(precision: str, key: str = "train.precision") -> str:
    """``bf16``, ``fp16`` or ``fp32`` for ``precision`` on this machine's training device; a value the device cannot
    run is a ConfigError naming ``key`` (e.g. ``student_train.precision``) and what to use instead."""
    if torch.cuda.is_available():
        if precision == "auto":
            return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
        if precision == "bf16" and not torch.cuda.is_bf16_supported():  # what transformers checks
            raise ConfigError(f"{key}: bf16 is not supported by this GPU ({torch.cuda.get_device_name()}); use auto "
                              "(fp16 here), fp16 or fp32")
        return precision
    if precision == "auto":
        return "bf16" if cpu_has_bf16() else "fp32"
    if precision == "fp16":
        raise ConfigError(f"{key}: fp16 needs a CUDA GPU and none is visible (training runs on the CPU); use auto "
                          f"({'bf16' if cpu_has_bf16() else 'fp32'} here), bf16 or fp32")
    return precision


__all__ = ["CPU_BF16_FLAGS", "cpu_has_bf16", "resolve_precision"]
