"""Distillation methods in real (tiny) training runs: schedules, hidden-state and attention distillation.

Each test trains the conftest's tiny teacher family for a few steps on real verse pairs and checks what the
method promises: the scheduled values are the ones used and logged, the extra terms are finite and learned
from, the adapters are trained but never exported, and misconfigurations fail with one clear sentence.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from transformers import Seq2SeqTrainingArguments

from distilmt.config import DistillConfig, StudentConfig
from distilmt.data.batching import ParallelDataset, Seq2SeqCollator
from distilmt.teachers.signal import LiveTeacher
from distilmt.training.callbacks import tensorboard_callback
from distilmt.training.trainer import DistilTrainer


def _args(tmp_path, steps=4, batch=8, accum=1, lr=3e-3, optim="adamw_torch", **extra):
    return Seq2SeqTrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=batch, gradient_accumulation_steps=accum,
        max_steps=steps, learning_rate=lr, optim=optim, lr_scheduler_type="constant", report_to="none",
        use_cpu=True, save_strategy="no", disable_tqdm=True, remove_unused_columns=False, seed=3,
        logging_steps=1, weight_decay=0.0, **extra)


def _trainer(tmp_path, tokenizer, pairs, student, teacher_model, distill, **args):
    data = ParallelDataset(pairs, tokenizer)
    collator = Seq2SeqCollator(tokenizer.pad_token_id, tokenizer.eos_token_id)
    return DistilTrainer(model=student, args=_args(tmp_path, **args), train_dataset=data, data_collator=collator,
                         teacher=LiveTeacher(teacher_model) if teacher_model is not None else None,
                         distill=distill, label_smoothing=0.1)


def test_schedules_move_temperature_and_weights_and_are_logged(tmp_path, tokenizer, tiny_teacher, verse_pairs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    distill = DistillConfig(alpha=0.1, beta=0.8, temperature=2.0, temperature_schedule="linear",
                            temperature_final=1.0, weight_schedule="linear", alpha_final=0.3, beta_final=0.6)
    trainer = _trainer(tmp_path, tokenizer, verse_pairs[:32], copy.deepcopy(tiny_teacher), tiny_teacher, distill)
    trainer.add_callback(tensorboard_callback(tmp_path / "tb"))
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    # Step k (0-based) trains at progress k / 4 and is logged after it: T 2 -> 1, alpha 0.1 -> 0.3, beta 0.8 -> 0.6.
    assert [h["temperature"] for h in logged] == pytest.approx([2.0, 1.75, 1.5, 1.25])
    assert [h["alpha"] for h in logged] == pytest.approx([0.1, 0.15, 0.2, 0.25])
    assert [h["beta"] for h in logged] == pytest.approx([0.8, 0.75, 0.7, 0.65])
    tags = set(EventAccumulator(str(tmp_path / "tb")).Reload().Tags()["scalars"])
    assert {"train/temperature", "train/alpha", "train/beta", "train/kd", "train/ce"} <= tags


def test_constant_settings_log_no_schedule(tmp_path, tokenizer, tiny_teacher, verse_pairs):
    trainer = _trainer(tmp_path, tokenizer, verse_pairs[:16], copy.deepcopy(tiny_teacher), tiny_teacher,
                       DistillConfig(), steps=2)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert logged and not any("temperature" in h or "alpha" in h for h in logged)
    assert trainer.scheduled_values() == {"temperature": 2.0, "alpha": 0.5, "beta": 0.5}


def test_kd_weight_rising_from_zero_still_runs_the_teacher(tmp_path, tokenizer, tiny_teacher, verse_pairs):
    distill = DistillConfig(alpha=0.0, beta=1.0, weight_schedule="cosine", alpha_final=1.0)
    trainer = _trainer(tmp_path, tokenizer, verse_pairs[:16], copy.deepcopy(tiny_teacher), tiny_teacher, distill,
                       steps=2)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["alpha"] for h in logged] == pytest.approx([0.0, 0.5])
    assert all("kd" in h for h in logged) and logged[-1]["kd"] >= 0


# -- layer maps (pure) ----------------------------------------------------------------------------------------

def test_layer_maps():
    from distilmt.config import ConfigError
    from distilmt.training.intermediate import layer_map

    assert layer_map("uniform", 2, 6) == [(0, 2), (1, 5)]
    assert layer_map("uniform", 3, 3) == [(0, 0), (1, 1), (2, 2)]
    assert layer_map("uniform", 1, 3) == [(0, 2)]
    assert layer_map("uniform", 4, 2) == [(0, 0), (1, 0), (2, 1), (3, 1)]
    assert layer_map("last", 2, 6) == [(1, 5)]
    assert layer_map("last:2", 2, 6) == [(0, 4), (1, 5)]
    assert layer_map([[0, 1], [1, 3]], 2, 4) == [(0, 1), (1, 3)]
    with pytest.raises(ConfigError, match=r"distill.hidden_layer_map: last:3 asks for 3 layers .* use last:2"):
        layer_map("last:3", 2, 6)
    with pytest.raises(ConfigError, match=r"pair \[2, 0\] is out of range: the student has layers 0..1"):
        layer_map([[2, 0]], 2, 6)


# -- hidden-state and attention distillation in training ---------------------------------------------------------

def _narrow_student(teacher, seed=1):
    """Half the teacher's width, depth and heads (d_model 16, 1+1 layers, 2 heads): adapters and head groups."""
    from distilmt.models.build import derive_student

    return derive_student(teacher, StudentConfig(depth_ratio=0.5, width_ratio=0.5, heads_ratio=0.5), seed=seed)


def test_hidden_state_kd_trains_adapters_and_exports_a_plain_student(tmp_path, tokenizer, tiny_teacher, verse_pairs):
    from safetensors.torch import load_file
    from transformers import AutoModelForSeq2SeqLM

    student = _narrow_student(tiny_teacher)
    before = copy.deepcopy(student.state_dict())
    distill = DistillConfig(hidden_weight=1.0, hidden_loss="mse", hidden_layer_map="uniform")
    trainer = _trainer(tmp_path, tokenizer, verse_pairs[:48], student, tiny_teacher, distill, steps=6, lr=1e-2)
    assert trainer.intermediate.hidden_pairs == {"encoder": [(0, 1)], "decoder": [(0, 1)]}
    adapters = {k: v.weight.detach().clone() for k, v in trainer.intermediate.adapters.items()}
    assert set(adapters) == {"encoder_0_1", "decoder_0_1"}
    assert {tuple(w.shape) for w in adapters.values()} == {(32, 16)}  # student width 16 -> teacher width 32
    trainer.train()

    logged = [h for h in trainer.state.log_history if "loss" in h]
    hidden = [h["hidden"] for h in logged]
    assert all(torch.isfinite(torch.tensor(h)) for h in hidden) and hidden[-1] < hidden[0]
    for key, weight in adapters.items():  # the optimizer updated the adapters
        assert not torch.equal(trainer.intermediate.adapters[key].weight, weight), key
    assert any(not torch.equal(p, before[n]) for n, p in student.state_dict().items())
    assert not hasattr(student, trainer.ADAPTERS)  # detached after training

    trainer.save_model(str(tmp_path / "student"))
    saved = set(load_file(str(tmp_path / "student" / "model.safetensors")))
    _narrow_student(tiny_teacher).save_pretrained(str(tmp_path / "plain"))
    assert saved == set(load_file(str(tmp_path / "plain" / "model.safetensors")))
    assert not any("adapter" in k for k in saved)
    loaded, info = AutoModelForSeq2SeqLM.from_pretrained(str(tmp_path / "student"), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    torch.testing.assert_close(loaded.model.encoder.layers[0].fc1.weight, student.model.encoder.layers[0].fc1.weight)


def _peaked(teacher):
    """The tiny teacher with sharper attention (query and key weights x 20): an untrained model attends almost
    uniformly, which would leave the attention term nothing to teach."""
    teacher = copy.deepcopy(teacher)
    with torch.no_grad():
        for name, p in teacher.named_parameters():
            if "q_proj.weight" in name or "k_proj.weight" in name:
                p.mul_(20.0)
    return teacher


@pytest.mark.parametrize("loss, heads", [("kl", "average"), ("mse", "repeat")])
def test_attention_kd_across_head_counts(tmp_path, tokenizer, tiny_teacher, verse_pairs, loss, heads):
    teacher = _peaked(tiny_teacher)
    student = _narrow_student(tiny_teacher)
    assert student.config.encoder_attention_heads == 2 and teacher.config.encoder_attention_heads == 4
    assert student.config._attn_implementation != "eager"
    distill = DistillConfig(attention_weight=5.0, attention_loss=loss, attention_heads=heads)
    # one batch of 8 pairs seen 8 times: the logged terms are comparable from step to step
    trainer = _trainer(tmp_path, tokenizer, verse_pairs[:8], student, teacher, distill, steps=8, lr=1e-2)
    assert student.config._attn_implementation == "eager"  # SDPA returns no weights
    assert set(trainer.intermediate.attention_pairs) == {"encoder", "decoder", "cross"}
    assert len(trainer.intermediate.adapters) == 0  # attention maps need no adapters
    trainer.train()
    attention = [h["attention"] for h in trainer.state.log_history if "loss" in h]
    assert attention[0] > 0.01 and attention[-1] < attention[0]
    assert student.config._attn_implementation != "eager"  # restored after training


@pytest.mark.parametrize("hidden_loss", ["mse", "cosine"])
def test_micro_batches_with_accumulation_equal_the_full_batch_for_hidden_and_attention(
        tmp_path, tokenizer, tiny_teacher, verse_pairs, hidden_loss):
    # As tests/test_training.py: one SGD step; sentences of different lengths, so a per-micro-batch mean would
    # weight tokens unequally. Adapter updates must agree too.
    data_pairs = verse_pairs[:4]
    teacher = _peaked(tiny_teacher)
    distill = DistillConfig(alpha=0.5, beta=0.5, hidden_weight=1.0, hidden_loss=hidden_loss, attention_weight=1.0)
    results = []
    for batch, accum in ((4, 1), (2, 2), (1, 4)):
        student = _narrow_student(tiny_teacher)
        init = copy.deepcopy(student)
        trainer = _trainer(tmp_path / f"{batch}", tokenizer, data_pairs, student, teacher, distill, steps=1,
                           batch=batch, accum=accum, lr=0.5, optim="sgd", max_grad_norm=0.0)
        adapters_init = copy.deepcopy(trainer.intermediate.adapters)
        trainer.train()
        delta = [(a - b).flatten() for a, b in zip(student.parameters(), init.parameters())]
        delta += [(a - b).flatten() for a, b in zip(trainer.intermediate.adapters.parameters(),
                                                     adapters_init.parameters())]
        results.append(torch.cat(delta))
    assert results[0].abs().max() > 0
    torch.testing.assert_close(results[1], results[0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(results[2], results[0], rtol=1e-4, atol=1e-6)


def test_clear_errors_for_bad_intermediate_settings(tmp_path, tokenizer, tiny_teacher, verse_pairs):
    from distilmt.config import ConfigError

    pairs = verse_pairs[:8]
    with pytest.raises(ConfigError, match="need a live teacher model"):
        _trainer(tmp_path, tokenizer, pairs, copy.deepcopy(tiny_teacher), None, DistillConfig(hidden_weight=1.0))
    with pytest.raises(ConfigError, match=r"distill.hidden_layer_map: pair \[5, 0\] is out of range"):
        _trainer(tmp_path, tokenizer, pairs, _narrow_student(tiny_teacher), tiny_teacher,
                 DistillConfig(hidden_weight=1.0, hidden_layer_map=[[5, 0]]))
    # 3 student heads cannot face 4 teacher heads
    from distilmt.models.build import derive_student
    odd = derive_student(tiny_teacher, StudentConfig(depth_ratio=0.5, width_ratio=0.75, heads_ratio=0.75), seed=1)
    assert odd.config.encoder_attention_heads == 3
    with pytest.raises(ConfigError, match="3 student and 4 teacher attention heads; one count must divide"):
        _trainer(tmp_path, tokenizer, pairs, odd, tiny_teacher, DistillConfig(attention_weight=1.0))
    layerdrop = copy.deepcopy(tiny_teacher)
    layerdrop.config.encoder_layerdrop = 0.1
    with pytest.raises(ConfigError, match="the student drops layers at random"):
        _trainer(tmp_path, tokenizer, pairs, layerdrop, tiny_teacher, DistillConfig(hidden_weight=1.0))


def test_adapters_live_in_checkpoints_so_a_killed_run_resumes_exactly(tmp_path, tokenizer, tiny_teacher, verse_pairs):
    # Through train_seq2seq as the pipeline runs it: checkpoints, dev BLEU, best-model reload, export.
    from safetensors.torch import load_file

    from distilmt.config import TrainConfig
    from distilmt.training.loop import last_checkpoint, train_seq2seq
    from helpers import Interrupt

    cfg = TrainConfig(learning_rate=3e-3, warmup_steps=1, max_steps=6, batch_tokens=200, bf16=False, eval_steps=3)
    distill = DistillConfig(hidden_weight=1.0, attention_weight=1.0)
    train, dev = verse_pairs[:80], verse_pairs[80:84]

    def run(name, student, **kwargs):
        return train_seq2seq(student, tokenizer, train, dev, cfg, tmp_path / name, tmp_path / f"tb-{name}", 0,
                             teacher=LiveTeacher(tiny_teacher), distill=distill, **kwargs)

    reference = _narrow_student(tiny_teacher)
    straight = run("straight", reference)
    with pytest.raises(KeyboardInterrupt):
        run("resumed", _narrow_student(tiny_teacher), callbacks=[Interrupt(at_step=4)])
    checkpoint = last_checkpoint(tmp_path / "resumed")
    assert checkpoint.name == "checkpoint-3"
    assert any(k.startswith("distil_adapters.") for k in load_file(str(checkpoint / "model.safetensors")))
    resumed = _narrow_student(tiny_teacher)
    trainer = run("resumed", resumed, resume=True)
    assert trainer.state.global_step == 6
    for (name, a), b in zip(reference.named_parameters(), resumed.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
    for a, b in zip(straight.intermediate.adapters.parameters(), trainer.intermediate.adapters.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    exported = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert not any("adapter" in k for k in exported)


# -- the token-KD divergence (distill.divergence) --------------------------------------------------------------

def test_training_with_the_jsd_divergence_runs_and_logs(tmp_path, tokenizer, tiny_teacher, verse_pairs):
    from conftest import TINY_TEACHER
    from distilmt.config import TeacherConfig
    from distilmt.losses import generalized_jsd, label_smoothed_cross_entropy, target_mask
    from distilmt.models.build import build_model

    student = build_model(TeacherConfig(**{**TINY_TEACHER, "decoder_layers": 1}), tokenizer, seed=7)
    distill = DistillConfig(alpha=0.5, beta=0.5, temperature=2.0, divergence="jsd", divergence_beta=0.3)
    trainer = _trainer(tmp_path, tokenizer, verse_pairs[:16], student, tiny_teacher, distill, steps=2)
    # The loss of a batch is (alpha * T^2 * JSD_0.3(student, teacher) + beta * CE_ls) / tokens, from separate passes.
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "decoder_input_ids")}
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
        student_logits, teacher_logits = trainer.model(**inputs).logits, tiny_teacher(**inputs).logits
    mask = target_mask(batch["labels"])
    jsd, n = generalized_jsd(student_logits, teacher_logits, mask, beta=0.3, temperature=2.0)
    ce, _ = label_smoothed_cross_entropy(student_logits, batch["labels"], 0.1)
    torch.testing.assert_close(loss, (0.5 * 4.0 * jsd + 0.5 * ce) / n, rtol=1e-5, atol=1e-6)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert trainer.state.global_step == 2 and len(logged) == 2
    assert all(math.isfinite(h["kd"]) and h["kd"] > 0 for h in logged)


@pytest.mark.parametrize("values, field, words", [
    ({"divergence": "kl"}, "distill.divergence", "forward_kl, reverse_kl, jsd, skew_kl, tvd"),
    ({"divergence_beta": 1.5}, "distill.divergence_beta", "[0, 1]"),
    ({"divergence": "reverse_kl", "teacher_cache": True}, "distill.divergence", "teacher_cache to false"),
    ({"divergence": "jsd", "divergence_beta": 1, "teacher_cache": True}, "distill.divergence", "reverse KL"),
])
def test_bad_divergence_settings_fail_with_one_clear_sentence(values, field, words):
    from distilmt.config import ConfigError, from_dict

    with pytest.raises(ConfigError) as err:
        from_dict(DistillConfig, values, "distill")
    message = str(err.value)
    assert message.startswith(field + ":") and words in message and "\n" not in message


def test_cache_friendly_divergences_are_accepted_with_the_cache():
    for name in ("forward_kl", "jsd", "skew_kl", "tvd"):
        assert DistillConfig(teacher_cache=True, divergence=name, divergence_beta=0.5).divergence == name
