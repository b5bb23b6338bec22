"""The training loop's promises: micro-batching equals the full batch, resume continues exactly, KD is wired."""

from __future__ import annotations

import copy
import json
import math
import random
import shutil
from types import SimpleNamespace

import pytest
import torch
import transformers.trainer as trainer_module
from safetensors.torch import load_file
from transformers import Seq2SeqTrainingArguments

from distilmt.config import DistillConfig, TrainConfig
from distilmt.data.batching import ParallelDataset, Seq2SeqCollator
from distilmt.losses import divergence_sum, token_kd_objective
from distilmt.models.build import build_model
from distilmt.models.mutual import MutualPair
from distilmt.teachers.cache import CachedTeacher
from distilmt.teachers.ensemble import EnsembleTeacher
from distilmt.teachers.signal import CausalTeacher, LiveTeacher, TeacherBase
from distilmt.training.intermediate import IntermediateKD
from distilmt.training.loop import last_checkpoint, train_seq2seq
from distilmt.training.terms import (
    AttentionTerm,
    EnsembleNLLTerm,
    HiddenTerm,
    MutualTerm,
    OnPolicyTerm,
    StepContext,
    TokenKDTerm,
    summed,
)
from distilmt.training.trainer import DistilTrainer
from helpers import Interrupt


def _sgd_args(tmp_path, batch, accum):
    return Seq2SeqTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=batch, gradient_accumulation_steps=accum,
        max_steps=1, learning_rate=0.5, optim="sgd", lr_scheduler_type="constant", max_grad_norm=0.0,
        report_to="none", use_cpu=True, save_strategy="no", disable_tqdm=True, remove_unused_columns=False,
        seed=7, weight_decay=0.0,
    )


@pytest.mark.parametrize("with_teacher", [False, True])
def test_micro_batches_with_accumulation_equal_the_full_batch(tmp_path, tokenizer, tiny_teacher, verse_pairs,
                                                              with_teacher):
    # Sentences of very different lengths: a per-micro-batch mean would weight tokens unequally.
    data = ParallelDataset(verse_pairs[:4], tokenizer)
    assert len({len(e["labels"]) for e in data.examples}) > 1
    collator = Seq2SeqCollator(tokenizer.pad_token_id, tokenizer.eos_token_id)
    results = []
    for batch, accum in ((4, 1), (2, 2), (1, 4)):
        student = copy.deepcopy(tiny_teacher)
        torch.manual_seed(0)
        with torch.no_grad():
            for p in student.parameters():
                p.add_(0.01 * torch.randn_like(p))  # differ from the teacher so KD has a gradient
        student_init = copy.deepcopy(student)
        teacher = LiveTeacher(copy.deepcopy(tiny_teacher)) if with_teacher else None
        trainer = DistilTrainer(model=student, args=_sgd_args(tmp_path / f"{batch}", batch, accum), train_dataset=data,
                                data_collator=collator, teacher=teacher,
                                distill=DistillConfig(alpha=0.5, beta=0.5, temperature=2.0) if with_teacher else None,
                                label_smoothing=0.1)
        trainer.train()
        delta = torch.cat([(a - b).flatten() for a, b in zip(student.parameters(), student_init.parameters())])
        results.append(delta)
    assert results[0].abs().max() > 0
    torch.testing.assert_close(results[1], results[0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(results[2], results[0], rtol=1e-4, atol=1e-6)


def test_killed_training_resumes_from_last_checkpoint(tmp_path, tokenizer, tiny_teacher, verse_pairs):
    cfg = TrainConfig(learning_rate=3e-3, warmup_steps=2, max_steps=8, batch_tokens=200, bf16=False,
                      eval_every_epoch=False, eval_steps=3, label_smoothing=0.1)  # checkpoints every 3, no dev BLEU
    train, dev = verse_pairs[:160], verse_pairs[160:170]

    reference = copy.deepcopy(tiny_teacher)
    train_seq2seq(reference, tokenizer, train, dev, cfg, tmp_path / "straight", tmp_path / "tb1", 0)

    interrupted = copy.deepcopy(tiny_teacher)
    with pytest.raises(KeyboardInterrupt):
        train_seq2seq(interrupted, tokenizer, train, dev, cfg, tmp_path / "resumed", tmp_path / "tb2", 0,
                      callbacks=[Interrupt(at_step=5)])
    ckpt = last_checkpoint(tmp_path / "resumed")
    assert ckpt is not None and ckpt.name == "checkpoint-3"
    assert 0 < json.loads((ckpt / "trainer_state.json").read_text())["epoch"] < 1  # resumed from inside an epoch
    # a crash while checkpoint-6 was being written: its model is there, its trainer state is not
    partial = ckpt.with_name("checkpoint-6")
    shutil.copytree(ckpt, partial)
    (partial / "trainer_state.json").unlink()
    assert last_checkpoint(tmp_path / "resumed") == ckpt
    shutil.rmtree(partial)

    resumed = copy.deepcopy(tiny_teacher)
    trainer = train_seq2seq(resumed, tokenizer, train, dev, cfg, tmp_path / "resumed", tmp_path / "tb2", 0,
                            resume=True)
    assert trainer.state.global_step == 8
    # Continuing from step 3 reproduces the uninterrupted run (same batches, same optimiser state).
    for (name, a), b in zip(reference.named_parameters(), resumed.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)


def test_kd_training_logs_ce_kd_and_writes_tensorboard(tmp_path, tokenizer, tiny_teacher, verse_pairs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    student = copy.deepcopy(tiny_teacher)
    cfg = TrainConfig(learning_rate=1e-3, warmup_steps=1, max_steps=4, batch_tokens=200, bf16=False)
    trainer = train_seq2seq(student, tokenizer, verse_pairs[:100], verse_pairs[100:110], cfg, tmp_path / "kd",
                            tmp_path / "tb", 0, teacher=LiveTeacher(tiny_teacher),
                            distill=DistillConfig(alpha=0.5, beta=0.5, temperature=2.0))
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert logged and all("ce" in h and "kd" in h for h in logged)
    assert any("eval_bleu" in h for h in trainer.state.log_history)
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/ce", "train/kd", "train/learning_rate", "eval/bleu"} <= tags
    assert (tmp_path / "kd" / "config.json").is_file() and (tmp_path / "kd" / "tokenizer.json").is_file()


@pytest.mark.parametrize("schedule, expected", [
    # 100 updates, 10 of warm-up, peak 1.0; lr after update 5, 10, 50, 80, 90, 100 (computed by hand)
    ("wsd", [0.5, 1.0, 1.0, 1.0, 0.5, 0.0]),          # stable until 80, linear decay over the last 20 % (decay_fraction 0.2)
    ("cosine", [0.5, 1.0, 0.5 * (1 + math.cos(math.pi * 40 / 90)), 0.5 * (1 + math.cos(math.pi * 70 / 90)),
                0.5 * (1 + math.cos(math.pi * 80 / 90)), 0.0]),
    ("linear", [0.5, 1.0, 50 / 90, 20 / 90, 10 / 90, 0.0]),
    ("constant", [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]),
])
def test_lr_schedules_as_the_trainer_builds_them(tmp_path, schedule, expected):
    from transformers import get_scheduler

    from distilmt.training.loop import training_arguments

    cfg = TrainConfig(learning_rate=1.0, warmup_steps=10, max_steps=100, lr_schedule=schedule, decay_fraction=0.2,
                      eval_every_epoch=False, bf16=False)
    args = training_arguments(cfg, tmp_path, steps_per_epoch=50)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    # exactly Trainer.create_scheduler's call
    scheduler = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=args.get_warmup_steps(100),
                              num_training_steps=100, scheduler_specific_kwargs=args.lr_scheduler_kwargs)
    lrs = {}
    for step in range(1, 101):
        optimizer.step()
        scheduler.step()
        lrs[step] = scheduler.get_last_lr()[0]
    assert [lrs[s] for s in (5, 10, 50, 80, 90, 100)] == pytest.approx(expected, abs=1e-9)


def test_unknown_lr_schedule_is_refused():
    from distilmt.config import ConfigError

    with pytest.raises(ConfigError, match="train.lr_schedule.*cosine, wsd, linear, constant"):
        TrainConfig(lr_schedule="step")
    with pytest.raises(ConfigError, match="train.decay_fraction"):
        TrainConfig(lr_schedule="wsd", decay_fraction=0)


# -- the loss terms as objects (distilmt.training_terms) -------------------------------------------------------

def _step(logits, labels, outputs=None, **fields):
    inputs = {"labels": labels, "attention_mask": torch.ones(labels.shape[0], 4, dtype=torch.long)}
    return StepContext(inputs=inputs, outputs=outputs or SimpleNamespace(logits=logits),
                       now={"temperature": 2.0, "alpha": 0.3, "beta": 0.7}, **fields)


def _tiny_case(seed=0):
    g = torch.Generator().manual_seed(seed)
    student, teacher = torch.randn(2, 3, 5, generator=g), torch.randn(2, 3, 5, generator=g)
    labels = torch.tensor([[1, 4, -100], [0, 2, 3]])  # 5 real target tokens
    return student, teacher, labels


def test_token_kd_term_is_token_kd_objective():
    student, teacher, labels = _tiny_case()
    term = TokenKDTerm(DistillConfig(alpha=0.3, beta=0.7, temperature=2.0), label_smoothing=0.1)
    step = _step(student, labels, teacher_logits=teacher)
    expected = token_kd_objective(student, teacher, labels, 0.3, 0.7, 2.0, 0.1)
    assert term.weight(step.now) == 1.0  # alpha and beta are inside the objective
    torch.testing.assert_close(term(step), expected["total"], rtol=0, atol=0)
    assert {k: float(v) for k, v in step.values.items()} == {k: float(expected[k]) for k in ("ce", "kd", "n_tokens")}
    # No teacher signal: beta times the plain cross-entropy, summed by hand over the 5 real tokens.
    plain = TokenKDTerm(DistillConfig(alpha=0.3, beta=0.7), label_smoothing=0.0)
    step = _step(student, labels)
    log_p = torch.log_softmax(student, -1)
    ce = -sum(float(log_p[b, t, labels[b, t]]) for b in range(2) for t in range(3) if labels[b, t] >= 0)
    assert float(plain(step)) == pytest.approx(0.7 * ce, rel=1e-6)
    assert float(step.values["kd"]) == 0.0 and int(step.values["n_tokens"]) == 5


def test_mutual_term_is_t_squared_kl_from_the_detached_peer():
    student, peer, labels = _tiny_case(1)
    student.requires_grad_(True)
    term = MutualTerm(DistillConfig(mutual=True, mutual_weight=0.4))
    step = _step(student, labels, peer_logits=peer)
    value = term(step)
    p, log_q = torch.softmax(peer / 2.0, -1), torch.log_softmax(student.detach() / 2.0, -1)
    kl = (p * (p.log() - log_q)).sum(-1)[labels.ne(-100)].sum()
    assert term.weight(step.now) == 0.4
    assert float(value.detach()) == pytest.approx(4.0 * float(kl), rel=1e-5)
    value.backward()
    assert student.grad is not None and not peer.requires_grad


def _intermediate(distill):
    config = SimpleNamespace(d_model=4, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                             decoder_attention_heads=2)
    return IntermediateKD(distill, config, config)


def test_hidden_and_attention_terms_on_hand_checked_states_and_maps():
    labels = torch.tensor([[1, 4, -100], [0, 2, 3]])  # 5 real target positions
    source = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])  # 7 real source positions
    distill = DistillConfig(hidden_weight=0.5, attention_weight=0.25)
    kd = _intermediate(distill)
    g = torch.Generator().manual_seed(2)
    enc, dec = torch.randn(2, 4, 4, generator=g), torch.randn(2, 3, 4, generator=g)

    def uniform(q, k):  # [batch, heads, q, k] maps, every key 1/k
        return torch.full((2, 2, q, k), 1.0 / k)

    def first_key(q, k):  # every query on key 0
        return torch.nn.functional.one_hot(torch.zeros(2, 2, q, dtype=torch.long), k).float()

    student = SimpleNamespace(logits=torch.zeros(2, 3, 5), encoder_hidden_states=(enc, enc),
                              decoder_hidden_states=(dec, dec), encoder_attentions=(uniform(4, 4),),
                              decoder_attentions=(uniform(3, 3),), cross_attentions=(uniform(3, 4),))
    teacher = SimpleNamespace(logits=torch.zeros(2, 3, 5), encoder_hidden_states=(enc, enc + 1),
                              decoder_hidden_states=(dec, dec + 1), encoder_attentions=(first_key(4, 4),),
                              decoder_attentions=(first_key(3, 3),), cross_attentions=(first_key(3, 4),))
    step = _step(student.logits, labels, outputs=student, teacher_outputs=teacher)
    step.inputs["attention_mask"] = source
    hidden, attention = HiddenTerm(kd, distill.hidden_weight), AttentionTerm(kd, distill.attention_weight)
    # MSE 1 at every real position (encoder and decoder sides added): 7 + 5.
    assert float(hidden(step)) == pytest.approx(12.0) and hidden.weight(step.now) == 0.5
    # KL(one-hot || uniform over K keys) = log K per real query: encoder 7 log 4, decoder 5 log 3, cross 5 log 4.
    assert float(attention(step)) == pytest.approx(7 * math.log(4) + 5 * math.log(3) + 5 * math.log(4), rel=1e-5)
    assert attention.weight(step.now) == 0.25
    assert hidden.needs_hidden and attention.needs_attentions and hidden.needs_teacher_outputs
    step.training = False  # evaluation: no intermediate terms
    assert not hidden.applies(step) and not attention.applies(step)


class _Fixed(torch.nn.Module):
    """A stand-in model whose output is fixed logits."""

    def __init__(self, logits):
        super().__init__()
        self.fixed = logits

    def forward(self, **inputs):
        return SimpleNamespace(logits=self.fixed)


def test_ensemble_nll_term_is_the_mixtures_nll_of_the_references():
    z1, z2, labels = _tiny_case(3)
    ensemble = EnsembleTeacher([_Fixed(z1), _Fixed(z2)], learned=True)  # uniform weights at the start
    batch = {"input_ids": torch.zeros(2, 4, dtype=torch.long), "attention_mask": torch.ones(2, 4, dtype=torch.long),
             "decoder_input_ids": torch.zeros(2, 3, dtype=torch.long), "labels": labels}
    step = _step(torch.zeros(2, 3, 5), labels, teacher_logits=ensemble.logits(batch, temperature=2.0))
    step.inputs = batch
    term = EnsembleNLLTerm(ensemble)
    p1, p2 = torch.softmax(z1, -1), torch.softmax(z2, -1)
    hand = -sum(math.log(0.5 * float(p1[b, t, labels[b, t]]) + 0.5 * float(p2[b, t, labels[b, t]]))
                for b in range(2) for t in range(3) if labels[b, t] >= 0)
    assert term.applies(step) and term.weight(step.now) == 1.0
    value = term(step)
    assert float(value.detach()) == pytest.approx(hand, rel=1e-5)
    value.backward()
    assert ensemble.weights.scores.grad is not None  # it moves the mixture weights
    step.teacher_logits = None  # an on-policy step: no reference logits, no NLL
    assert not term.applies(step)


def test_on_policy_term_is_the_divergence_on_the_translated_batch_for_drawn_steps():
    student, teacher_logits, labels = _tiny_case(4)
    policy = {"input_ids": torch.zeros(2, 4, dtype=torch.long), "attention_mask": torch.ones(2, 4, dtype=torch.long),
              "decoder_input_ids": torch.zeros(2, 3, dtype=torch.long), "labels": labels}

    class Teacher(TeacherBase):
        def logits(self, batch):
            assert "labels" not in batch
            return teacher_logits

    distill = DistillConfig(alpha=0.6, beta=0.4, on_policy_ratio=0.5, on_policy_divergence="jsd", on_policy_beta=0.3)
    term = OnPolicyTerm(distill, Teacher(), translate=lambda model, inputs: policy, seed=9)
    step = _step(torch.zeros(2, 3, 5), torch.tensor([[1, -100, -100], [2, 2, -100]]), model=_Fixed(student),
                 on_policy=True)
    expected, _ = divergence_sum("jsd", student, teacher_logits, labels.ne(-100), 2.0, beta=0.3)
    assert float(term(step)) == pytest.approx(4.0 * float(expected), rel=1e-6) and term.last_policy is policy
    assert term.weight(step.now) == 0.3  # alpha of the step
    coin = random.Random(9)
    assert [term.replaces_reference_kd() for _ in range(20)] == [coin.random() < 0.5 for _ in range(20)]
    step.on_policy = False
    assert not term.applies(step)


def _terms_trainer(tmp_path, model, teacher, distill):
    return DistilTrainer(model=model, args=_sgd_args(tmp_path, 2, 1), train_dataset=[], teacher=teacher,
                         distill=distill)


def test_the_trainer_builds_its_terms_from_the_config_and_the_teachers_capabilities(tmp_path, tiny_teacher):
    def kinds(trainer):
        return [type(t) for t in trainer.terms]

    assert kinds(_terms_trainer(tmp_path, copy.deepcopy(tiny_teacher), None, None)) == [TokenKDTerm]
    live = LiveTeacher(copy.deepcopy(tiny_teacher))
    assert kinds(_terms_trainer(tmp_path, copy.deepcopy(tiny_teacher), live, DistillConfig())) == [TokenKDTerm]
    assert kinds(_terms_trainer(tmp_path, copy.deepcopy(tiny_teacher), live, DistillConfig(hidden_weight=0.5))) \
        == [TokenKDTerm, HiddenTerm]
    assert kinds(_terms_trainer(tmp_path, copy.deepcopy(tiny_teacher), live,
                                DistillConfig(hidden_weight=0.5, attention_weight=0.1, on_policy_ratio=0.5))) \
        == [TokenKDTerm, OnPolicyTerm, HiddenTerm, AttentionTerm]
    # No KD (alpha 0 throughout): no on-policy term.
    assert kinds(_terms_trainer(tmp_path, copy.deepcopy(tiny_teacher), live,
                                DistillConfig(alpha=0.0, beta=1.0, on_policy_ratio=0.5))) == [TokenKDTerm]
    ensemble = EnsembleTeacher([tiny_teacher], learned=True)
    assert kinds(_terms_trainer(tmp_path, copy.deepcopy(tiny_teacher), ensemble, DistillConfig())) \
        == [TokenKDTerm, EnsembleNLLTerm]
    pair = MutualPair(copy.deepcopy(tiny_teacher), copy.deepcopy(tiny_teacher))
    assert kinds(_terms_trainer(tmp_path, pair, live, DistillConfig(mutual=True))) == [TokenKDTerm, MutualTerm]
    # The capabilities the trainer reads instead of probing the teacher.
    assert (LiveTeacher.has_outputs, LiveTeacher.has_topk, LiveTeacher.learned) == (True, False, False)
    assert (CachedTeacher.has_topk, CachedTeacher.needs_example_index, CachedTeacher.has_outputs) == (True, True, False)
    assert EnsembleTeacher.applies_temperature and not EnsembleTeacher.has_outputs and ensemble.learned
    assert not CausalTeacher.has_outputs and not EnsembleTeacher([tiny_teacher]).learned


def test_the_trainers_loss_is_the_weighted_sum_of_its_terms_over_the_token_count(tmp_path, tokenizer, tiny_teacher,
                                                                               verse_pairs):
    data = ParallelDataset(verse_pairs[:6], tokenizer)
    batch = Seq2SeqCollator(tokenizer.pad_token_id, tokenizer.eos_token_id)([data[i] for i in range(len(data))])
    student = copy.deepcopy(tiny_teacher)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.05 * torch.randn_like(p))  # differ from the teacher: every term is non-zero
    distill = DistillConfig(alpha=0.4, beta=0.6, temperature=2.0, hidden_weight=0.3, attention_weight=0.2)
    trainer = _terms_trainer(tmp_path, student, LiveTeacher(copy.deepcopy(tiny_teacher)), distill)
    assert [type(t) for t in trainer.terms] == [TokenKDTerm, HiddenTerm, AttentionTerm]
    student.train()
    n = int(batch["labels"].ne(-100).sum())
    with torch.no_grad():
        loss = trainer.compute_loss(student, batch, num_items_in_batch=n)
        step = trainer.step_context(student, batch)
        weighted = [t.weight(step.now) * t(step) for t in trainer.terms if t.applies(step)]
    assert len(weighted) == 3 and all(float(w) > 0 for w in weighted)
    torch.testing.assert_close(loss, sum(weighted) / n, rtol=1e-6, atol=0)
    with torch.no_grad():
        total = summed(trainer.terms, step)  # what compute_loss divides by the count; each value logged by name
    torch.testing.assert_close(total, sum(weighted), rtol=1e-6, atol=0)
    assert {"ce", "kd", "n_tokens", "hidden", "attention"} <= set(step.values)
    # In evaluation only the token term applies, and without a teacher signal: beta * CE / n.
    student.eval()
    with torch.no_grad():
        eval_loss = trainer.compute_loss(student, batch, num_items_in_batch=n)
        step = trainer.step_context(student, batch)
    assert step.teacher_logits is None and [t for t in trainer.terms if t.applies(step)] == trainer.terms[:1]
    token = trainer.terms[0](step)
    torch.testing.assert_close(token, 0.6 * step.values["ce"], rtol=0, atol=0)
    torch.testing.assert_close(eval_loss, token / n, rtol=1e-6, atol=0)


class _PoisonedTeacher(LiveTeacher):
    """A live teacher whose logits are NaN on the listed calls (a diverging KD signal, reproducibly)."""

    def __init__(self, model, poisoned_calls):
        super().__init__(model)
        self.calls, self.poisoned = 0, set(poisoned_calls)

    def logits(self, batch):
        self.calls += 1
        out = super().logits(batch)
        return out * float("nan") if self.calls in self.poisoned else out


def test_non_finite_updates_are_skipped_and_too_many_stop_the_training(tmp_path, tokenizer, tiny_teacher, verse_pairs):
    from distilmt.config import DistillConfig
    from distilmt.errors import TrainingDiverged

    train = verse_pairs[:120]
    distill = DistillConfig(alpha=0.5, beta=0.5, temperature=1.0)
    cfg = TrainConfig(learning_rate=1e-3, warmup_steps=0, max_steps=5, batch_tokens=200, bf16=False,
                      eval_every_epoch=False, max_nonfinite_steps=3)
    # one poisoned update of five: skipped, the rest train, every weight finite
    student = copy.deepcopy(tiny_teacher)
    trainer = train_seq2seq(student, tokenizer, train, [], cfg, tmp_path / "once", tmp_path / "tb1", 0,
                            teacher=_PoisonedTeacher(copy.deepcopy(tiny_teacher), {2}), distill=distill)
    guard = next(cb for cb in trainer.callback_handler.callbacks if type(cb).__name__ == "NonFiniteGuard")
    assert guard.skipped == [2] and trainer.state.global_step == 5
    assert all(torch.isfinite(p).all() for p in student.parameters())
    # every update poisoned: the weights never move, and the third skip stops the training in one line
    student = copy.deepcopy(tiny_teacher)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    with pytest.raises(TrainingDiverged) as error:
        train_seq2seq(student, tokenizer, train, [], cfg, tmp_path / "always", tmp_path / "tb2", 0,
                      teacher=_PoisonedTeacher(copy.deepcopy(tiny_teacher), range(1, 100)), distill=distill)
    message = str(error.value)
    assert "\n" not in message and "3 updates (first at update 1, last at 3)" in message
    assert "lower the learning rate" in message and "--resume" in message
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())
    assert not (tmp_path / "always" / "model.safetensors").exists()


def test_a_dev_sentence_longer_than_the_model_is_cut_not_a_crash(tmp_path, tokenizer, verse_pairs, caplog):
    from distilmt.config import TeacherConfig

    model = build_model(TeacherConfig(arch="marian", d_model=32, encoder_layers=1, decoder_layers=1, ffn_dim=64,
                                      heads=4, dropout=0.0), tokenizer, seed=0)  # Marian: a fixed position table
    assert model.config.max_position_embeddings == 512  # the long line below has more tokens than that
    long_line = " ".join(s for s, _ in verse_pairs[:300])
    dev = [(long_line, long_line), *verse_pairs[200:205]]
    cfg = TrainConfig(learning_rate=1e-3, warmup_steps=0, max_steps=2, batch_tokens=200, bf16=False,
                      eval_every_epoch=True, eval_steps=2, max_eval_tokens=4096)
    with caplog.at_level("INFO", logger="distilmt.training.trainer"):
        trainer = train_seq2seq(model, tokenizer, verse_pairs[:60], dev, cfg, tmp_path / "out", tmp_path / "tb", 0)
    assert any("eval_bleu" in entry for entry in trainer.state.log_history)  # the evaluation ran
    assert "1 of 6 dev sentences cut to 512 tokens" in caplog.text


def test_a_full_disk_is_one_line_and_resume_finds_the_last_whole_checkpoint(tmp_path, tokenizer, tiny_teacher,
                                                                           verse_pairs):
    import subprocess

    from distilmt.errors import DiskFull

    small = tmp_path / "small-disk"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=900k", "tmpfs", str(small)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        cfg = TrainConfig(learning_rate=1e-3, warmup_steps=0, max_steps=8, batch_tokens=200, bf16=False,
                          eval_every_epoch=False, eval_steps=2)
        with pytest.raises(DiskFull) as error:
            train_seq2seq(copy.deepcopy(tiny_teacher), tokenizer, verse_pairs[:120], verse_pairs[120:124], cfg,
                          small / "out", tmp_path / "tb", 0)
        message = str(error.value)
        assert "\n" not in message and "the disk is full" in message and "--resume" in message
        kept = last_checkpoint(small / "out")  # a half-written checkpoint is never the one resumed from
        assert kept is None or (kept / "trainer_state.json").is_file()
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_reloading_a_checkpoint_reports_only_keys_that_are_really_missing(tmp_path, tiny_teacher, monkeypatch):
    model = copy.deepcopy(tiny_teacher)
    model.save_pretrained(tmp_path / "checkpoint")
    state = load_file(tmp_path / "checkpoint" / "model.safetensors")
    tied = model.load_state_dict(state, False)
    assert "lm_head.weight" in tied.missing_keys  # saved once, as model.shared: what the Trainer reloads
    warnings = []
    monkeypatch.setattr(trainer_module.logger, "warning", warnings.append)
    trainer = _terms_trainer(tmp_path / "out", model, None, None)
    trainer._issue_warnings_after_load(tied)
    assert warnings == []
    lost = "model.encoder.layers.0.fc1.weight"
    del state[lost]
    trainer._issue_warnings_after_load(model.load_state_dict(state, False))
    assert warnings == [f"There were missing keys in the checkpoint model loaded: {[lost]}."]
