"""How big a model is: parameters (with and without embeddings) and bytes of weights on disk."""

from __future__ import annotations

from pathlib import Path

import torch

WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
"""Files counted by :func:`dir_size_mb` (HF safetensors / pytorch_model.bin, CTranslate2 model.bin)."""


def count_parameters(model) -> dict[str, int]:
    """Count a torch model's parameters, each shared tensor once.

    ``params`` counts every stored parameter (tied input/output embeddings once); fixed sinusoidal
    position tables (Marian, M2M100) are left out because they are recomputed, not learned or saved.
    ``params_embedding`` is the token embedding matrices (input, output, encoder/decoder; once when
    tied) plus learned position embeddings; ``params_non_embedding`` is the rest.
    """
    seen: set[int] = set()
    fixed: set[int] = set()
    embedding: set[int] = set()
    for module in model.modules():
        is_sinusoidal = "sinusoidal" in type(module).__name__.lower()
        for param in module.parameters(recurse=False):
            if is_sinusoidal:
                fixed.add(id(param))
            elif isinstance(module, torch.nn.Embedding):
                embedding.add(id(param))
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None and getattr(output, "weight", None) is not None:
        embedding.add(id(output.weight))
    total = emb = 0
    for param in model.parameters():
        if id(param) in seen or id(param) in fixed:
            continue
        seen.add(id(param))
        total += param.numel()
        if id(param) in embedding:
            emb += param.numel()
    return {"params": total, "params_embedding": emb, "params_non_embedding": total - emb}


def dir_size_mb(path: str | Path) -> float:
    """Megabytes (2**20 bytes) of weight files directly inside ``path`` (*.safetensors, *.bin)."""
    path = Path(path)
    files = {f for pattern in WEIGHT_PATTERNS for f in path.glob(pattern) if f.is_file()}
    return sum(f.stat().st_size for f in files) / 2**20
