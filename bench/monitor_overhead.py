"""How much the distillation monitor slows training at its default frequency.

Trains the same small student twice on real text (the built-in English->Hungarian Bible corpus, the
first N training verses) with a plain Seq2SeqTrainer: once without and once with the
DistillationMonitor (default MonitorConfig: a panel of 2 dev samples every 50 steps, plain lines,
TensorBoard on), alternating the two and keeping each one's fastest run. Prints

    monitor_overhead: R      (training time with the monitor / without; 1.03 = 3 % slower)

and the time spent inside the monitor's callbacks, which is the same cost measured without the noise
of a shared machine, split into the one-off teacher translations and the cost of each panel, and the
steady-state overhead a long run sees (``steady_state_overhead``: one panel per 50 steps). Teacher and
student are untrained here (an untrained model stops at once or never), so their greedy decoding is
held to exactly the longest reference's length (``min_new_tokens`` = ``max_new_tokens``): the monitor
pays for real-length translations.

    .venv/bin/python bench/monitor_overhead.py [--steps 100] [--pairs 2000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time

import torch
from transformers import (
    DataCollatorForSeq2Seq,
    M2M100Config,
    M2M100ForConditionalGeneration,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    TrainerCallback,
)

from distilmt.config import MonitorConfig
from distilmt.data.bible import DEV_BOOKS, TEST_BOOKS, aligned_verses
from distilmt.data.tokenizer import train_tokenizer
from distilmt.monitor import DistillationMonitor, select_samples


def build(tokenizer, d_model: int, layers: int, seed: int):
    torch.manual_seed(seed)
    config = M2M100Config(
        vocab_size=len(tokenizer), d_model=d_model, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=4 * d_model,
        decoder_ffn_dim=4 * d_model, max_position_embeddings=256, scale_embedding=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id, decoder_start_token_id=tokenizer.eos_token_id,
        forced_eos_token_id=None,
    )
    return M2M100ForConditionalGeneration(config)


class Stopwatch(TrainerCallback):
    """Wall time of training, from train begin (before the monitor's) to train end."""

    def __init__(self):
        self.start = self.seconds = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_train_end(self, args, state, control, **kwargs):
        self.seconds = time.perf_counter() - self.start


class TimedMonitor(DistillationMonitor):
    """The monitor, with the time spent in each of its callbacks accumulated."""

    def _timed(self, name, *args, **kwargs):
        t0 = time.perf_counter()
        result = getattr(super(), name)(*args, **kwargs)
        self.spent = getattr(self, "spent", {})
        self.spent[name] = self.spent.get(name, 0.0) + time.perf_counter() - t0
        return result

    def on_train_begin(self, *a, **k):
        return self._timed("on_train_begin", *a, **k)

    def on_step_end(self, *a, **k):
        return self._timed("on_step_end", *a, **k)

    def on_epoch_end(self, *a, **k):
        return self._timed("on_epoch_end", *a, **k)

    def on_train_end(self, *a, **k):
        return self._timed("on_train_end", *a, **k)


def run(tokenizer, features, teacher, samples, steps: int, batch_size: int, with_monitor: bool, workdir: str,
        min_new_tokens: int = 0):
    student = build(tokenizer, 128, 2, seed=1)
    watch = Stopwatch()
    callbacks = [watch]
    monitor = None
    if with_monitor:
        monitor = TimedMonitor(teacher, tokenizer, samples, MonitorConfig(quiet=True), log_dir=f"{workdir}/tb",
                               stream=io.StringIO(), max_new_tokens=min_new_tokens,
                               generate_kwargs={"min_new_tokens": min_new_tokens})
        callbacks.append(monitor)
    args = Seq2SeqTrainingArguments(
        output_dir=f"{workdir}/out", max_steps=steps, per_device_train_batch_size=batch_size, learning_rate=5e-4,
        logging_steps=25, save_strategy="no", report_to=[], use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True, seed=0, dataloader_num_workers=0,
    )
    trainer = Seq2SeqTrainer(model=student, args=args, train_dataset=features,
                             data_collator=DataCollatorForSeq2Seq(tokenizer, model=student),
                             processing_class=tokenizer, callbacks=callbacks)
    trainer.train()
    return watch.seconds, monitor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per run (panels every 50)")
    parser.add_argument("--pairs", type=int, default=2000, help="training verses used")
    parser.add_argument("--batch-size", type=int, default=32, help="sentences per batch (~1,500 tokens)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each kind; the fastest counts")
    opts = parser.parse_args()

    verses, _ = aligned_verses()
    held_out = set(DEV_BOOKS) | set(TEST_BOOKS)
    train = [(v.en, v.hu) for v in verses if v.book not in held_out][: opts.pairs]
    dev = [(v.en, v.hu) for v in verses if v.book in DEV_BOOKS]
    with tempfile.TemporaryDirectory() as workdir:
        tokenizer = train_tokenizer([t for pair in train for t in pair], 2000, f"{workdir}/tok")
        features = [dict(tokenizer(s, text_target=t, truncation=True, max_length=96)) for s, t in train]
        device = "cuda" if torch.cuda.is_available() else "cpu"
        teacher = build(tokenizer, 256, 3, seed=0).to(device).eval().requires_grad_(False)
        samples = select_samples(dev, MonitorConfig().num_samples)
        min_new = max(len(tokenizer(text_target=ref)["input_ids"]) for _, ref in samples)

        run(tokenizer, features, teacher, samples, 10, opts.batch_size, True, workdir, min_new)  # warm-up
        plain, monitored, once, per_panel, panels, lengths = [], [], [], [], 0, []
        for _ in range(opts.repeats):
            seconds, _ = run(tokenizer, features, teacher, samples, opts.steps, opts.batch_size, False, workdir)
            plain.append(seconds)
            seconds, monitor = run(tokenizer, features, teacher, samples, opts.steps, opts.batch_size, True,
                                   workdir, min_new)
            monitored.append(seconds)
            panels = len(monitor.panels)
            once.append(monitor.spent.get("on_train_begin", 0.0))
            per_panel.append((monitor.spent["on_step_end"] + monitor.spent.get("on_epoch_end", 0.0)
                              + monitor.spent.get("on_train_end", 0.0)) / max(panels, 1))
            lengths = [len(tokenizer(text_target=r["student"])["input_ids"]) for r in monitor.history]

    base, with_monitor = min(plain), min(monitored)
    step = base / opts.steps
    frequency = MonitorConfig().sample_frequency
    print(f"device: {device}, threads: {torch.get_num_threads()}, steps: {opts.steps}, batch: {opts.batch_size} "
          f"sentences, {step:.3f} s/step, panels per run: {panels}, translation tokens: {lengths}")
    print(f"without monitor: {[round(s, 2) for s in plain]} s, with: {[round(s, 2) for s in monitored]} s")
    print(f"inside the monitor: {min(once):.2f} s once (teacher translations), {min(per_panel):.3f} s per panel")
    print(f"steady_state_overhead: {1 + min(per_panel) / (frequency * step):.3f}")
    print(f"monitor_overhead: {with_monitor / base:.3f}")


if __name__ == "__main__":
    main()
