"""Evaluation: translate with either engine (translate), quality and collapse checks (metrics),
size (size), speed and memory (speed), and the side-by-side comparison (compare).

Submodules are imported where used, so ``python -m distilmt.evaluation.speed`` stays light.
"""
