"""Are the speed table's speed-ups reproducible? Two back-to-back `distilmt compare` runs of the same models.

    .venv/bin/python bench/speed_stability.py RUN_DIR [--rounds 3] [--sentences 64]

RUN_DIR is a finished run (teacher/, student-baseline/, student-kd/ and, when there, the CTranslate2 export of
student-kd); run it on an otherwise idle machine. Each `compare` times every model in interleaved rounds, each in
its own process, and reports each model's best round (see distilmt.evaluation.compare). Prints, per model, the two
speed-ups, the median of the per-round ratios of each run for comparison, and ends with
`max_speedup_difference: X` (the largest |a - b| / min(a, b) over the models).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def models(run_dir: Path) -> list[str]:
    found = [f"{name}={run_dir / name}" for name in ("teacher", "student-baseline", "student-kd")
             if (run_dir / name / "config.json").is_file()]
    ct2 = sorted(p for p in (run_dir / "export").glob("*ct2*") if (p / "model.bin").is_file()) \
        if (run_dir / "export").is_dir() else []
    return found + [f"{p.name}={p}" for p in ct2]


def compare(run_dir: Path, out: Path, rounds: int, sentences: int) -> list[dict]:
    command = [sys.executable, "-m", "distilmt.cli", "--quiet", "compare", *models(run_dir), "--run-dir",
               str(run_dir), "--out", str(out), "--max-sentences", str(sentences), "--beams", "1",
               "--speed-rounds", str(rounds)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "comparison.json").read_text())["models"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = [compare(args.run_dir, Path(tmp) / f"run{i}", args.rounds, args.sentences) for i in (1, 2)]
    worst = 0.0
    for first, second in zip(*runs):
        a, b = first["speedup"], second["speedup"]
        medians = [statistics.median(r["speedup_rounds"]) for r in (first, second)]
        difference = abs(a - b) / min(a, b)
        worst = max(worst, difference)
        print(f"{first['name']:24s} best-of {a:.2f}x / {b:.2f}x ({difference:.0%} apart); median of per-round "
              f"ratios {medians[0]:.2f}x / {medians[1]:.2f}x; sent/s per round {first['sentences_per_s_rounds']} / "
              f"{second['sentences_per_s_rounds']}")
    print(f"max_speedup_difference: {worst:.3f}")


if __name__ == "__main__":
    main()
