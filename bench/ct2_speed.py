"""Benchmark: HF teacher vs HF student vs CTranslate2 int8 student, greedy throughput at batch 32.

    python bench/ct2_speed.py TEACHER_DIR STUDENT_DIR [--sentences FILE] [--n 256] [--threads 1x1,1x2,2x1,2x2]

Exports the student to CTranslate2 int8 in a temporary directory, then times every engine in its own
Python process (timing HF and CT2 in one process halved HF's speed here) and prints ``name: value`` lines:
sentences/s per engine, the ratios between them, and the best CT2 thread setting (intra x inter).
Notes from a 2-vCPU machine: intra_threads=2 made CT2 2-4x slower than 1; intra 1 x inter 2 was best.
Numbers are ratios measured in one run on one machine: not pass/fail thresholds.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from distilmt.evaluation.speed import measure_in_subprocess
from distilmt.export import export_ctranslate2

FALLBACK_SENTENCES = [
    "In the beginning God created the heavens and the earth.",
    "And God said, Let there be light: and there was light.",
    "The Lord is my shepherd; I shall not want.",
    "Blessed are the meek, for they shall inherit the earth.",
    "He went up into the mountain, and when he had sat down, his disciples came to him.",
    "For everything there is a season, and a time for every purpose under heaven.",
    "They went out, and entered into the boat, and that night they caught nothing.",
    "Love is patient and is kind; love doesn't envy.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teacher_dir")
    parser.add_argument("student_dir")
    parser.add_argument("--sentences", help="source sentences, one per line (default: a few built-in lines)")
    parser.add_argument("--n", type=int, default=256, help="sentences timed per pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", default="1x1,1x2,2x1,2x2", help="CT2 settings to try, intra x inter")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()

    lines = (Path(args.sentences).read_text(encoding="utf-8").splitlines() if args.sentences
             else FALLBACK_SENTENCES)
    lines = [line.strip() for line in lines if line.strip()]
    sentences = (lines * (args.n // len(lines) + 1))[: args.n]
    base = {"batch_sizes": [32], "num_beams": 1, "beam_batch_sizes": [], "repeats": args.repeats, "warmup": 1,
            "max_new_tokens": args.max_new_tokens}

    def timed(name: str, model_dir, **extra) -> float:
        result = measure_in_subprocess(model_dir, sentences, {**base, **extra})
        speed = result["by_batch_size"]["32"]
        low, high = speed["spread"]
        print(f"{name}_sent_per_s: {speed['sentences_per_s']:.2f}  (spread {low:.2f}-{high:.2f})", flush=True)
        print(f"{name}_peak_rss_mb: {result['peak_rss_mb']:.0f}", flush=True)
        return speed["sentences_per_s"]

    print(f"sentences: {len(sentences)} (batch 32, greedy, median of {args.repeats})")
    teacher = timed("hf_teacher", args.teacher_dir)
    student = timed("hf_student", args.student_dir)
    with tempfile.TemporaryDirectory(prefix="distilmt-ct2-") as tmp:
        ct2_dir = export_ctranslate2(args.student_dir, Path(tmp) / "student-ct2-int8", quantization="int8")
        ct2 = {}
        for setting in args.threads.split(","):
            intra, inter = (int(x) for x in setting.lower().split("x"))
            ct2[(intra, inter)] = timed(f"ct2_int8_student_intra{intra}_inter{inter}", ct2_dir,
                                        ct2={"intra_threads": intra, "inter_threads": inter})
    (intra, inter), best = max(ct2.items(), key=lambda item: item[1])
    print(f"ct2_best_threads: intra={intra} inter={inter}")
    print(f"ct2_int8_student_sent_per_s: {best:.2f}")
    print(f"hf_student_vs_hf_teacher: {student / teacher:.2f}")
    print(f"ct2_int8_student_vs_hf_student: {best / student:.2f}")
    print(f"ct2_int8_student_vs_hf_teacher: {best / teacher:.2f}")


if __name__ == "__main__":
    main()
