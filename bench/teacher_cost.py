"""What the teacher costs a distillation step: plain student training, live-teacher KD and teacher-cache KD.

Built in one process from the quick preset's shapes (hu->en, vocabulary 4,000, teacher d128 3+3, student derived
from it: 2 encoder + 1 decoder layers, batch_tokens 1,500) on a random sample of the built-in corpus's training
pairs (default 3,000). The teacher is randomly initialised: a step costs the same whatever the weights.

Every variant runs the project's own loss (``DistilTrainer.compute_loss``), backward, clipping and an AdamW
step on the same student and the same token-budget batches:

* ``plain``  - CE only (no teacher);
* ``live``   - token KD with the live teacher (``LiveTeacher``: a teacher forward in every step);
* ``cached`` - token KD from the teacher cache (``CachedTeacher``: top-k rows read from memory-mapped shards,
  KL on the k entries by ``sparse_forward_kl``);
* ``teacher_forward`` - the live teacher's forward alone, for the target ``live <= (teacher + plain) x 1.05``.

After warm-up, the variants are timed in interleaved blocks (each block = the same batches, the order rotating
each round); a variant's step time is the median over rounds. Ends with ``name: value`` lines, ratios relative
to the plain step (= 1.00). The cache build is timed once and compared with one measured plain epoch.

    OMP_NUM_THREADS=1 .venv/bin/python bench/teacher_cost.py [--pairs 3000] [--rounds 7] [--block 6] [--top-k 16]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import tempfile
import time

import torch
from transformers import Seq2SeqTrainingArguments

from distilmt.config import DistillConfig, load_config
from distilmt.data.batching import ParallelDataset, Seq2SeqCollator, pack_in_order, padding_fraction, token_batches
from distilmt.data.corpus import build_splits
from distilmt.data.tokenizer import train_tokenizer
from distilmt.models.build import build_model, derive_student
from distilmt.rundir import teacher_fingerprint
from distilmt.teachers.cache import CachedTeacher, build_teacher_cache
from distilmt.teachers.signal import LiveTeacher
from distilmt.training.trainer import DistilTrainer


def unbucketed_batches(lengths, max_tokens, seed):
    """The same token budget, examples in random order (no length bucketing): what a plain shuffle gives."""
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    return pack_in_order(order, lengths, max_tokens)


def main() -> None:

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3000, help="training pairs sampled from the built-in corpus")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (each times every variant once)")
    parser.add_argument("--block", type=int, default=6, help="steps per variant per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant first")
    parser.add_argument("--top-k", type=int, default=16, help="teacher-cache k")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for student and teacher (default fp32)")
    parser.add_argument("--profile", action="store_true", help="also print the top operators of each KD step")
    opts = parser.parse_args()

    started = time.perf_counter()
    cfg = load_config("quick")
    full = build_splits(cfg.data)
    data_cfg = dataclasses.replace(cfg.data, max_train_pairs=opts.pairs)
    pairs = build_splits(data_cfg).train
    max_tokens, batch_tokens = cfg.data.max_tokens, cfg.student_train.batch_tokens
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    distill = DistillConfig(alpha=cfg.distill.alpha, beta=cfg.distill.beta, temperature=cfg.distill.temperature)

    with tempfile.TemporaryDirectory() as work:
        tokenizer = train_tokenizer((t for p in pairs for t in p), cfg.data.vocab_size, f"{work}/tok")
        teacher = build_model(cfg.teacher, tokenizer, seed=0).to(device)
        student = derive_student(teacher, cfg.student, seed=1).to(device).train()
        data = ParallelDataset(pairs, tokenizer, max_tokens, with_index=True)
        collator = Seq2SeqCollator(tokenizer.pad_token_id, teacher.config.decoder_start_token_id)
        lengths = data.lengths()
        epoch = token_batches(lengths, batch_tokens, seed=0)
        batches = [{k: v.to(device) for k, v in collator([data[i] for i in b]).items()} for b in epoch]
        tokens = [int(b["labels"].ne(-100).sum()) for b in batches]

        # One-time cost: build the cache (the pipeline's settings: 4x the student's batch budget, no gradients).
        t0 = time.perf_counter()
        teacher_id = teacher_fingerprint(teacher)
        stats = build_teacher_cache(f"{work}/cache", pairs, tokenizer, teacher, teacher_id=teacher_id,
                                    max_tokens=max_tokens, top_k=opts.top_k, batch_tokens=4 * batch_tokens)
        build_seconds = time.perf_counter() - t0

        args = Seq2SeqTrainingArguments(output_dir=f"{work}/out", report_to="none", use_cpu=device.type == "cpu",
                                        save_strategy="no", disable_tqdm=True, remove_unused_columns=False)
        live = LiveTeacher(teacher, bf16=opts.bf16)
        cached = CachedTeacher.open(f"{work}/cache", pairs, tokenizer, teacher_id, max_tokens)
        trainers = {
            "plain": DistilTrainer(model=student, args=args, train_dataset=data, label_smoothing=0.1),
            "live": DistilTrainer(model=student, args=args, train_dataset=data, teacher=live, distill=distill,
                                  label_smoothing=0.1),
            "cached": DistilTrainer(model=student, args=args, train_dataset=data, teacher=cached, distill=distill,
                                    label_smoothing=0.1),
        }
        optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4)

        def sync():
            if device.type == "cuda":
                torch.cuda.synchronize()

        def step(name, batch):
            if name == "teacher_forward":
                live.logits(batch)
                return
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=opts.bf16):
                loss = trainers[name].compute_loss(student, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        # One plain epoch over the subset (the unit of the cache's one-time cost).
        t0 = time.perf_counter()
        for batch in batches:
            step("plain", batch)
        sync()
        epoch_seconds = time.perf_counter() - t0

        variants = ["plain", "live", "cached", "teacher_forward"]
        rng = random.Random(0)
        for name in variants:
            for batch in batches[: opts.warmup]:
                step(name, batch)
        per_step = {name: [] for name in variants}
        per_token = {name: [] for name in variants}
        for r in range(opts.rounds):
            block = rng.sample(range(len(batches)), opts.block)
            block_tokens = sum(tokens[i] for i in block)
            for name in variants[r % 4:] + variants[: r % 4]:
                sync()
                t0 = time.perf_counter()
                for i in block:
                    step(name, batches[i])
                sync()
                seconds = time.perf_counter() - t0
                per_step[name].append(seconds / opts.block)
                per_token[name].append(block_tokens / seconds)
        if opts.profile:  # where the time goes, operator by operator
            from torch.profiler import ProfilerActivity, profile

            for name in ("plain", "live", "cached"):
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    for batch in batches[:3]:
                        step(name, batch)
                print(f"--- {name}: 3 steps, top operators by self time")
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))
        # Where the cached step's extra time goes: reading its top-k rows from the shards.
        t0 = time.perf_counter()
        for batch in batches[:20]:
            cached.topk(batch)
        read_ms = (time.perf_counter() - t0) / min(20, len(batches)) * 1000

    step_s = {name: statistics.median(v) for name, v in per_step.items()}
    tok_s = {name: statistics.median(v) for name, v in per_token.items()}
    plain = step_s["plain"]
    full_tokens = sum(len(t) for t in tokenizer(text_target=[t for _, t in full.train])["input_ids"]
                      if len(t) <= max_tokens)
    padded_bucketed = padding_fraction(lengths, epoch)
    padded_plain = padding_fraction(lengths, unbucketed_batches(lengths, batch_tokens, seed=0))

    print(f"device: {device}, threads: {torch.get_num_threads()}, precision: {'bf16' if opts.bf16 else 'fp32'}, "
          f"teacher {teacher.num_parameters():,} params (d{cfg.teacher.d_model} {cfg.teacher.encoder_layers}+"
          f"{cfg.teacher.decoder_layers}), student {student.num_parameters():,} params "
          f"({student.config.encoder_layers}+{student.config.decoder_layers}), vocabulary {len(tokenizer)}")
    print(f"subset: {len(data)} pairs, {sum(tokens):,} target tokens, {len(batches)} batches of <= {batch_tokens} "
          f"padded tokens; {opts.rounds} rounds x {opts.block} steps per variant, median")
    for name in variants:
        print(f"  {name:16s} {step_s[name] * 1000:7.1f} ms/step  {tok_s[name]:9,.0f} target tok/s  "
              f"(rounds: {', '.join(f'{s * 1000:.0f}' for s in per_step[name])} ms)")
    print(f"cached step: {read_ms:.1f} ms of it reading top-{stats['k']} rows from the memory-mapped shards")
    print(f"cache: {stats['n_tokens']:,} tokens, {stats['total_bytes'] / 1e6:.2f} MB, mean top-{stats['k']} mass "
          f"{stats['mean_topk_mass']:.3f} (random teacher: flat, a trained one is peaked); built in "
          f"{build_seconds:.1f} s; one plain epoch {epoch_seconds:.1f} s")
    print(f"default corpus ({len(full.train):,} training pairs, {full_tokens:,} target tokens): cache of about "
          f"{stats['bytes_per_token'] * full_tokens / 1e6:.0f} MB at k={stats['k']}")
    print(f"live KD target: <= (teacher_forward + plain) x 1.05 = "
          f"{(step_s['teacher_forward'] + plain) / plain * 1.05:.2f}; bench took {time.perf_counter() - started:.0f} s")
    print(f"plain_tokens_per_s: {tok_s['plain']:.0f}")
    print(f"live_kd_tokens_per_s: {tok_s['live']:.0f}")
    print(f"cached_kd_tokens_per_s: {tok_s['cached']:.0f}")
    print("plain_step: 1.00")
    print(f"teacher_forward: {step_s['teacher_forward'] / plain:.2f}")
    print(f"live_kd_step: {step_s['live'] / plain:.2f}")
    print(f"cached_kd_step: {step_s['cached'] / plain:.2f}")
    print(f"padding_fraction_bucketed: {padded_bucketed:.3f}")
    print(f"padding_fraction_unbucketed: {padded_plain:.3f}")
    print(f"cache_bytes_per_token: {stats['bytes_per_token']:.1f}")
    print(f"cache_build_epochs: {build_seconds / epoch_seconds:.2f}")


if __name__ == "__main__":
    main()
