"""How small the named student shapes (``student.shape``) with vocabulary trimming (``student.trim_vocab``) make
students of full-size teachers, and what a training step of such a student costs.

No model hub here, so the teachers are full-size stand-ins with random weights (sizes and speed do not depend on
the weights):

* **opus-mt** (Helsinki-NLP/opus-mt-*): MarianConfig d_model 512, 6+6 layers, FFN 2048, 8 heads, a shared
  vocabulary of 58,101 pieces, ``<pad>`` last (the Opus-MT layout); built for real;
* **NLLB-600M** (facebook/nllb-200-distilled-600M): M2M100Config d_model 1024, 12+12 layers, FFN 4096, 16 heads,
  vocabulary 256,206; counted on the meta device (``with torch.device("meta")``), never allocated.

Each student is :func:`distilmt.models.build.derive_student` with ``StudentConfig(shape=...)``, then
:func:`distilmt.models.trim.trim_model` to a kept vocabulary. The kept vocabulary is an assumption, not a
measurement: a stand-in has no real tokenizer and no corpus, so we keep **8,000 ids for opus-mt** (a few hundred
thousand sentence pairs of one language pair use about that many of its 58k pieces) and **16,000 for NLLB-600M**
(one pair of its 200 languages, 256k pieces), chosen at random among the teacher's ids, plus the special tokens
(the model's size depends on how many ids are kept, not which). On the built-in Bible corpus the run's own
tokenizer shows the same effect at small scale (``tests/models/test_trim.py``).

MB on disk: HF fp32 safetensors and CTranslate2 int8 (``distilmt.export.export_ctranslate2``) for every model
built for real; the NLLB teacher is computed as 4 bytes per parameter (it is never built). The stand-ins are saved
with a synthetic word-level tokenizer of the right size (the converters need one).

Training step (CPU, fp32, this machine): the opus-shaped ``tiny`` student at the teacher's full 58k vocabulary and
trimmed to 8k, each with plain CE, live KD (the 74M teacher forward in every step) and cached KD (top-16 teacher
cache, :class:`distilmt.teachers.cache.CachedTeacher`), through the project's own loss
(``DistilTrainer.compute_loss``), backward, clipping and AdamW, on the same token-budget batches of synthetic
sentences (Zipf-distributed token ids, 10-40 tokens). Ends with ``name: value`` lines.

    OMP_NUM_THREADS=2 .venv/bin/python bench/real_shapes.py [--steps 4] [--batch-tokens 1500]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

OPUS_KEPT, NLLB_KEPT = 8000, 16000
SHAPE_NAMES = ("tiny", "base")
RECOMMENDED = "tiny"
BENCH_DIR = Path(__file__).resolve().parent


def opus_config():
    from transformers import MarianConfig

    return MarianConfig(vocab_size=58101, d_model=512, encoder_layers=6, decoder_layers=6, encoder_ffn_dim=2048,
                        decoder_ffn_dim=2048, encoder_attention_heads=8, decoder_attention_heads=8,
                        max_position_embeddings=512, pad_token_id=58100, eos_token_id=0, bos_token_id=None,
                        decoder_start_token_id=58100, forced_eos_token_id=0, scale_embedding=True,
                        share_encoder_decoder_embeddings=True, activation_function="swish", dropout=0.1)


def nllb_config():
    from transformers import M2M100Config

    return M2M100Config(vocab_size=256206, d_model=1024, encoder_layers=12, decoder_layers=12, encoder_ffn_dim=4096,
                        decoder_ffn_dim=4096, encoder_attention_heads=16, decoder_attention_heads=16,
                        max_position_embeddings=1024, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                        decoder_start_token_id=2, scale_embedding=True, activation_function="relu",
                        tie_word_embeddings=True, encoder_layerdrop=0.0, decoder_layerdrop=0.0)


def kept_ids(vocab_size: int, n_kept: int, specials: list[int], seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    others = [i for i in range(vocab_size) if i not in set(specials)]
    return sorted(set(specials) | set(rng.sample(others, n_kept - len(set(specials)))))


def word_tokenizer(tokens: list[str], config):
    """A word-level fast tokenizer over ``tokens`` (ids = positions) with the config's special ids named."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token=tokens[_unk_id(config)]))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=tokens[config.pad_token_id],
                                   eos_token=tokens[config.eos_token_id], unk_token=tokens[_unk_id(config)],
                                   model_max_length=512)


def _unk_id(config) -> int:
    return 1 if config.model_type == "marian" else 3


def synthetic_tokens(config) -> list[str]:
    names = {config.pad_token_id: "<pad>", config.eos_token_id: "</s>", _unk_id(config): "<unk>"}
    return [names.get(i, f"w{i}") for i in range(config.vocab_size)]


def disk_mb(model, tokenizer, work: Path, name: str, ct2: bool) -> tuple[float, float | None]:
    """(HF fp32 MB, CTranslate2 int8 MB or None) of ``model`` saved with ``tokenizer``."""
    from distilmt.models.size import dir_size_mb

    out = work / name
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    hf = dir_size_mb(out)
    ct2_mb = None
    if ct2 and importlib.util.find_spec("ctranslate2") is not None:
        from distilmt.export import export_ctranslate2

        ct2_mb = dir_size_mb(export_ctranslate2(out, work / f"{name}-ct2", quantization="int8"))
    return hf, ct2_mb


def sizes(label: str, teacher_config, n_kept: int, work: Path, build_teacher: bool, rows: list, results: dict):
    """Teacher and students (each named shape, untrimmed and trimmed) of one stand-in: parameters and MB."""
    from transformers import AutoModelForSeq2SeqLM

    from distilmt.config import StudentConfig
    from distilmt.models.build import derive_student
    from distilmt.models.size import count_parameters
    from distilmt.models.trim import VocabMap, trim_model

    if build_teacher:
        torch.manual_seed(0)
        teacher = AutoModelForSeq2SeqLM.from_config(teacher_config).eval()
    else:
        with torch.device("meta"):
            teacher = AutoModelForSeq2SeqLM.from_config(teacher_config)
    counts = count_parameters(teacher)
    tokens = synthetic_tokens(teacher_config)
    if build_teacher:
        hf, ct2 = disk_mb(teacher, word_tokenizer(tokens, teacher_config), work, f"{label}-teacher", ct2=True)
    else:
        hf, ct2 = counts["params"] * 4 / 2**20, None
    rows.append((label, "teacher", teacher_config.vocab_size, counts, hf, ct2, build_teacher))
    specials = sorted({teacher_config.pad_token_id, teacher_config.eos_token_id, _unk_id(teacher_config),
                       teacher_config.decoder_start_token_id} | ({0, 1, 2, 3} if label == "nllb600m" else set()))
    kept = kept_ids(teacher_config.vocab_size, n_kept, specials)
    vocab_map = VocabMap(kept, teacher_config.vocab_size)
    models = {}
    for shape in SHAPE_NAMES:
        student = derive_student(teacher, StudentConfig(shape=shape), seed=0)  # a real model, even from meta
        full_counts = count_parameters(student)
        rows.append((label, f"{shape} (full vocabulary)", teacher_config.vocab_size, full_counts, None, None, False))
        trimmed = trim_model(student, vocab_map)
        del student
        trimmed_counts = count_parameters(trimmed)
        hf, ct2 = disk_mb(trimmed, word_tokenizer([tokens[i] for i in kept], trimmed.config), work,
                          f"{label}-{shape}", ct2=True)
        rows.append((label, f"{shape} + trim {n_kept // 1000}k", n_kept, trimmed_counts, hf, ct2, True))
        results[f"{label}_{shape}_compression"] = counts["params"] / trimmed_counts["params"]
        results[f"{label}_{shape}_params"] = trimmed_counts["params"]
        models[shape] = trimmed
    results[f"{label}_teacher_params"] = counts["params"]
    return teacher, models, vocab_map, tokens


def zipf_pairs(kept: list[int], tokens: list[str], n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Synthetic sentence pairs over the kept ids, Zipf-distributed (a few frequent ids, a long tail)."""
    rng = random.Random(seed)
    ids = [i for i in kept if tokens[i].startswith("w")]
    weights = [1.0 / (rank + 1) for rank in range(len(ids))]
    def sentence():
        return " ".join(tokens[i] for i in rng.choices(ids, weights, k=rng.randint(10, 40)))
    return [(sentence(), sentence()) for _ in range(n)]


def step_times(teacher, student_full, student_trimmed, vocab_map, tokens, work: Path, opts) -> dict:
    """Median seconds per training step: {full, trimmed} x {plain, live, cached}."""
    from transformers import Seq2SeqTrainingArguments

    from distilmt.config import DistillConfig
    from distilmt.data.batching import ParallelDataset, Seq2SeqCollator, token_batches
    from distilmt.teachers.cache import CachedTeacher, build_teacher_cache
    from distilmt.teachers.signal import LiveTeacher, VocabMappedTeacher
    from distilmt.training.trainer import DistilTrainer

    config = teacher.config
    pairs = zipf_pairs(vocab_map.kept.tolist(), tokens, opts.pairs)
    full_tok = word_tokenizer(tokens, config)
    trim_tok = word_tokenizer([tokens[i] for i in vocab_map.kept.tolist()], student_trimmed.config)
    t0 = time.perf_counter()
    build_teacher_cache(work / "cache", pairs, full_tok, teacher, teacher_id="stand-in", top_k=16,
                        batch_tokens=4 * opts.batch_tokens)
    cache_seconds = time.perf_counter() - t0
    distill = DistillConfig(alpha=0.5, beta=0.5, temperature=2.0)
    args = Seq2SeqTrainingArguments(output_dir=str(work / "out"), report_to="none", use_cpu=True, save_strategy="no",
                                    disable_tqdm=True, remove_unused_columns=False)
    times = {}
    for vocab, student, tok in (("full", student_full, full_tok), ("trimmed", student_trimmed, trim_tok)):
        data = ParallelDataset(pairs, tok, 0, with_index=True)
        collator = Seq2SeqCollator(tok.pad_token_id, student.config.decoder_start_token_id)
        batches = [collator([data[i] for i in b]) for b in token_batches(data.lengths(), opts.batch_tokens, seed=0)]
        live = LiveTeacher(teacher)
        cached = CachedTeacher.open(work / "cache", pairs, full_tok, "stand-in")
        if vocab == "trimmed":
            live, cached = VocabMappedTeacher(live, vocab_map), VocabMappedTeacher(cached, vocab_map)
        student.train()
        trainers = {"plain": DistilTrainer(model=student, args=args, train_dataset=data, label_smoothing=0.1),
                    "live": DistilTrainer(model=student, args=args, train_dataset=data, teacher=live, distill=distill,
                                          label_smoothing=0.1),
                    "cached": DistilTrainer(model=student, args=args, train_dataset=data, teacher=cached,
                                            distill=distill, label_smoothing=0.1)}
        optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4)

        def step(name, batch):
            loss = trainers[name].compute_loss(student, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        for name in trainers:  # warm-up
            step(name, batches[0])
        per = {name: [] for name in trainers}
        for r in range(opts.steps):
            batch = batches[(r + 1) % len(batches)]
            order = list(trainers)[r % 3:] + list(trainers)[: r % 3]
            for name in order:
                t0 = time.perf_counter()
                step(name, batch)
                per[name].append(time.perf_counter() - t0)
        for name, values in per.items():
            times[f"{vocab}_{name}"] = statistics.median(values)
        times[f"{vocab}_target_tokens"] = statistics.mean(int(b["labels"].ne(-100).sum()) for b in batches)
    times["cache_build_s"] = cache_seconds
    return times


def ct2_labels_line() -> str:
    """``ct2_labels_speedup: R`` from bench/ct2_labels.py (another bench) when it is there and says it."""
    path = BENCH_DIR / "ct2_labels.py"
    if not path.is_file():
        return "ct2_labels_speedup: see bench/ct2_labels.py"
    spec = importlib.util.spec_from_file_location("ct2_labels", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "main", None)):
        return "ct2_labels_speedup: see bench/ct2_labels.py"
    buffer, argv = io.StringIO(), sys.argv
    sys.argv = [str(path)]
    try:
        with contextlib.redirect_stdout(buffer):
            value = module.main()
    finally:
        sys.argv = argv
    print(buffer.getvalue(), end="")
    if isinstance(value, (int, float)):
        return f"ct2_labels_speedup: {value:.2f}"
    if isinstance(value, dict) and isinstance(value.get("ct2_labels_speedup"), (int, float)):
        return f"ct2_labels_speedup: {value['ct2_labels_speedup']:.2f}"
    found = re.findall(r"^ct2_labels_speedup:\s*(\S+)", buffer.getvalue(), flags=re.M)
    return f"ct2_labels_speedup: {found[-1]}" if found else "ct2_labels_speedup: see bench/ct2_labels.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant (after one warm-up step)")
    parser.add_argument("--batch-tokens", type=int, default=1500, help="padded tokens per training batch")
    parser.add_argument("--pairs", type=int, default=200, help="synthetic training pairs (cache, batches)")
    opts = parser.parse_args()
    started = time.perf_counter()
    rows, results = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        opus, opus_students, opus_map, opus_tokens = sizes("opus_mt", opus_config(), OPUS_KEPT, work, True, rows,
                                                           results)
        from distilmt.config import StudentConfig
        from distilmt.models.build import derive_student

        tiny_full = derive_student(opus, StudentConfig(shape=RECOMMENDED), seed=0)
        times = step_times(opus, tiny_full, opus_students[RECOMMENDED], opus_map, opus_tokens, work, opts)
        del tiny_full, opus_students
        _, nllb_students, _, _ = sizes("nllb600m", nllb_config(), NLLB_KEPT, work, False, rows, results)
        del nllb_students

    print(f"threads: {torch.get_num_threads()}; teachers are random-weight stand-ins of the real shapes; kept "
          f"vocabularies are assumed ({OPUS_KEPT:,} of 58,101 for opus-mt, {NLLB_KEPT:,} of 256,206 for NLLB-600M)")
    print(f"{'teacher':9s} {'model':24s} {'vocab':>7s} {'params':>12s} {'embedding':>12s} {'compression':>11s} "
          f"{'HF fp32 MB':>10s} {'CT2 int8 MB':>11s}")
    teacher_params = {}
    for label, name, vocab, counts, hf, ct2, built in rows:
        if name == "teacher":
            teacher_params[label] = counts["params"]
        hf_text = "-" if hf is None else f"{hf:.1f}" + ("" if built else " (4 B/param)")
        print(f"{label:9s} {name:24s} {vocab:7,d} {counts['params']:12,d} {counts['params_embedding']:12,d} "
              f"{teacher_params[label] / counts['params']:10.2f}x {hf_text:>10s} "
              f"{'-' if ct2 is None else f'{ct2:.1f}':>11s}")
    print(f"training step of the opus-shaped {RECOMMENDED} student (median of {opts.steps} steps after 1 warm-up, "
          f"batches of <= {opts.batch_tokens} padded tokens, ~{times['trimmed_target_tokens']:.0f} target tokens; "
          f"cache of {opts.pairs} pairs built in {times['cache_build_s']:.1f} s):")
    for vocab in ("full", "trimmed"):
        label = "58,101 (full)" if vocab == "full" else f"{OPUS_KEPT:,} (trimmed)"
        print(f"  vocabulary {label:16s} plain {times[f'{vocab}_plain'] * 1000:7.0f} ms   live KD "
              f"{times[f'{vocab}_live'] * 1000:7.0f} ms   cached KD {times[f'{vocab}_cached'] * 1000:7.0f} ms")
    print(f"recommended: {RECOMMENDED} + trim_vocab (floors: >= 4x opus-mt, >= 10x NLLB-600M)")
    print(f"bench took {time.perf_counter() - started:.0f} s")
    print(f"opus_mt_teacher_params: {results['opus_mt_teacher_params']}")
    print(f"opus_mt_student_params: {results[f'opus_mt_{RECOMMENDED}_params']}")
    print(f"opus_mt_compression: {results[f'opus_mt_{RECOMMENDED}_compression']:.2f}")
    print(f"opus_mt_base_compression: {results['opus_mt_base_compression']:.2f}")
    print(f"nllb600m_teacher_params: {results['nllb600m_teacher_params']}")
    print(f"nllb600m_student_params: {results[f'nllb600m_{RECOMMENDED}_params']}")
    print(f"nllb600m_compression: {results[f'nllb600m_{RECOMMENDED}_compression']:.2f}")
    print(f"nllb600m_base_compression: {results['nllb600m_base_compression']:.2f}")
    for vocab in ("full", "trimmed"):
        for name in ("plain", "live", "cached"):
            print(f"opus_{RECOMMENDED}_{vocab}_vocab_{name}_step_s: {times[f'{vocab}_{name}']:.3f}")
    print(ct2_labels_line())


if __name__ == "__main__":
    main()
