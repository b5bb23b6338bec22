"""Methods 5-7 of issue 6 in real (tiny) runs: on-policy distillation, teacher ensembles, mutual learning.

Each test uses the conftest's tiny teacher family on real verse pairs and checks the promise against a value
computed by hand from separate forward passes: the on-policy KD term is the divergence on the student's own
(seeded) translations, an ensemble of identical teachers is that teacher, learned ensemble weights train and
never reach the saved student, and each mutual student's loss is CE + weight * KL to its detached peer.
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, Seq2SeqTrainingArguments

from conftest import TINY_TEACHER
from distilmt.config import DistillConfig, StudentConfig, TeacherConfig
from distilmt.data.batching import ParallelDataset, Seq2SeqCollator
from distilmt.losses import divergence_sum, forward_kl, label_smoothed_cross_entropy, target_mask, token_kd_objective
from distilmt.models.build import build_model, derive_student
from distilmt.models.mutual import MutualPair
from distilmt.teachers.ensemble import EnsembleTeacher
from distilmt.teachers.signal import LiveTeacher
from distilmt.training.trainer import DistilTrainer, generated_targets


def _args(tmp_path, steps=3, batch=8):
    return Seq2SeqTrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=batch, max_steps=steps, learning_rate=3e-3,
        lr_scheduler_type="constant", report_to="none", use_cpu=True, save_strategy="no", disable_tqdm=True,
        remove_unused_columns=False, seed=3, logging_steps=1, weight_decay=0.0)


def _trainer(tmp_path, tokenizer, pairs, model, teacher, distill, label_smoothing=0.0, **args):
    data = ParallelDataset(pairs, tokenizer)
    collator = Seq2SeqCollator(tokenizer.pad_token_id, tokenizer.eos_token_id)
    return DistilTrainer(model=model, args=_args(tmp_path, **args), train_dataset=data, data_collator=collator,
                         processing_class=tokenizer, teacher=teacher, distill=distill, label_smoothing=label_smoothing)


def _batch(tokenizer, pairs):
    data = ParallelDataset(pairs, tokenizer)
    return Seq2SeqCollator(tokenizer.pad_token_id, tokenizer.eos_token_id)([data[i] for i in range(len(data))])


def _other_teacher(tokenizer, seed=5):
    return build_model(TeacherConfig(**TINY_TEACHER), tokenizer, seed=seed)


# -- method 5: on-policy distillation --------------------------------------------------------------------------

def test_generated_targets_mask_everything_after_the_first_eos():
    eos = 2
    sequences = torch.tensor([[2, 7, 8, 2, 0, 0], [2, 5, 6, 7, 9, 4]])  # start token, tokens, eos, pads
    decoder_input_ids, labels = generated_targets(sequences, eos)
    assert decoder_input_ids.tolist() == [[2, 7, 8, 2, 0], [2, 5, 6, 7, 9]]
    assert labels.tolist() == [[7, 8, 2, -100, -100], [5, 6, 7, 9, 4]]  # no eos: every token is a target


def test_on_policy_kd_is_the_divergence_on_the_students_own_translations(tmp_path, tokenizer, tiny_teacher,
                                                                         verse_pairs):
    distill = DistillConfig(alpha=0.7, beta=0.3, temperature=2.0, on_policy_ratio=1.0, on_policy_divergence="jsd",
                            on_policy_beta=0.4, on_policy_max_new_tokens=12)
    student = derive_student(tiny_teacher, StudentConfig(depth_ratio=0.5), seed=1)
    trainer = _trainer(tmp_path, tokenizer, verse_pairs[:8], student, LiveTeacher(tiny_teacher), distill,
                       label_smoothing=0.1)
    batch = _batch(tokenizer, verse_pairs[:8])
    student.train()
    torch.manual_seed(11)
    loss = trainer.compute_loss(student, batch, num_items_in_batch=int(target_mask(batch["labels"]).sum()))
    policy = trainer._last_policy
    torch.manual_seed(11)
    again = trainer.student_translations(student, batch)  # seeded sampling: the same translations
    assert torch.equal(again["labels"], policy["labels"]) and student.training
    labels = policy["labels"]
    assert labels.shape != batch["labels"].shape or not torch.equal(labels, batch["labels"])
    assert labels.ne(-100).sum() > 0
    # By hand: separate student and teacher forwards on the same generated sequences; CE on the reference.
    with torch.no_grad():
        fwd = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   decoder_input_ids=policy["decoder_input_ids"])
        s_logits, t_logits = student(**fwd).logits, tiny_teacher(**fwd).logits
        jsd, _ = divergence_sum("jsd", s_logits, t_logits, target_mask(labels), 2.0, beta=0.4)
        ce, n_ref = label_smoothed_cross_entropy(student(input_ids=batch["input_ids"],
                                                         attention_mask=batch["attention_mask"],
                                                         decoder_input_ids=batch["decoder_input_ids"]).logits,
                                                 batch["labels"], 0.1)
    expected = (0.7 * 4.0 * jsd + 0.3 * ce) / n_ref  # normalised by the reference target-token count
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)


def test_on_policy_ratio_zero_is_todays_loss(tmp_path, tokenizer, tiny_teacher, verse_pairs):
    student = derive_student(tiny_teacher, StudentConfig(depth_ratio=0.5), seed=1).train()
    batch = _batch(tokenizer, verse_pairs[:8])
    n = int(target_mask(batch["labels"]).sum())
    losses = []
    for distill in (DistillConfig(), DistillConfig(on_policy_ratio=0.0, on_policy_divergence="tvd")):
        trainer = _trainer(tmp_path, tokenizer, verse_pairs[:8], student, LiveTeacher(tiny_teacher), distill,
                           label_smoothing=0.1)
        losses.append(trainer.compute_loss(student, batch, num_items_in_batch=n).detach())
    with torch.no_grad():
        fwd = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   decoder_input_ids=batch["decoder_input_ids"])
        hand = token_kd_objective(student(**fwd).logits, tiny_teacher(**fwd).logits, batch["labels"], 0.5, 0.5, 2.0,
                                  0.1)["total"] / n
    assert torch.equal(losses[0], losses[1]) and float(losses[0]) == pytest.approx(float(hand), rel=1e-6)


def test_on_policy_with_an_ensemble_trains_greedy(tmp_path, tokenizer, tiny_teacher, verse_pairs):
    distill = DistillConfig(alpha=0.5, beta=0.5, on_policy_ratio=0.5, on_policy_decoding="greedy",
                            on_policy_max_new_tokens=10)
    ensemble = EnsembleTeacher([tiny_teacher, _other_teacher(tokenizer)], [0.5, 0.5])
    student = derive_student(tiny_teacher, StudentConfig(depth_ratio=0.5), seed=1)
    trainer = _trainer(tmp_path, tokenizer, verse_pairs[:32], student, ensemble, distill, steps=4)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 4 and all(h["kd"] >= 0 and h["loss"] == h["loss"] for h in logged)


# -- method 6: multi-teacher ------------------------------------------------------------------------------------

def test_ensemble_of_identical_teachers_is_the_teacher(tokenizer, tiny_teacher, verse_pairs):
    batch = _batch(tokenizer, verse_pairs[:6])
    ensemble = EnsembleTeacher([tiny_teacher, copy.deepcopy(tiny_teacher)], [0.3, 0.7])
    single = LiveTeacher(tiny_teacher).logits(batch)
    mask = target_mask(batch["labels"])
    for t in (1.0, 2.0):
        mixed = ensemble.logits(batch, temperature=t)
        # Temperature applied once: softmax(returned / T) is the teacher's softmax(z / T).
        assert torch.allclose(torch.log_softmax(mixed / t, -1), torch.log_softmax(single / t, -1), atol=1e-5)
        student = torch.randn_like(single)
        assert float(forward_kl(student, mixed, mask, t)[0]) == pytest.approx(
            float(forward_kl(student, single, mask, t)[0]), rel=1e-5)


def test_ensemble_is_the_hand_mixture_of_two_teachers(tokenizer, tiny_teacher, verse_pairs):
    batch = _batch(tokenizer, verse_pairs[:6])
    other = _other_teacher(tokenizer)
    ensemble = EnsembleTeacher([tiny_teacher, other], [1.0, 3.0])  # normalised to [0.25, 0.75]
    z1, z2 = LiveTeacher(tiny_teacher).logits(batch), LiveTeacher(other).logits(batch)
    t = 2.0
    hand = 0.25 * torch.softmax(z1 / t, -1) + 0.75 * torch.softmax(z2 / t, -1)
    assert torch.allclose(torch.softmax(ensemble.logits(batch, temperature=t) / t, -1), hand, atol=1e-6)


def test_ensemble_refuses_a_teacher_with_another_vocabulary(tmp_path, tokenizer, tiny_teacher):
    from distilmt.errors import ModelError

    same, other = tmp_path / "same", tmp_path / "other-vocab"
    tiny_teacher.save_pretrained(same)
    tokenizer.save_pretrained(same)
    tiny_teacher.save_pretrained(other)
    tokenizer.add_tokens(["<only-here>"])
    tokenizer.save_pretrained(other)
    with pytest.raises(ModelError, match="other-vocab"):
        EnsembleTeacher.load([same, other], _fresh(same))
    ok = EnsembleTeacher.load([same, same], _fresh(same), weights="learned")
    assert ok.learned and len(ok.teachers) == 2


def _fresh(directory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory))


def test_learned_ensemble_weights_train_and_stay_out_of_the_student(tmp_path, tokenizer, tiny_teacher, verse_pairs):
    ensemble = EnsembleTeacher([tiny_teacher, _other_teacher(tokenizer)], learned=True)
    student = derive_student(tiny_teacher, StudentConfig(depth_ratio=0.5), seed=1)
    trainer = _trainer(tmp_path, tokenizer, verse_pairs[:32], student, ensemble, DistillConfig(), steps=3)
    before = ensemble.weights.scores.detach().clone()
    trainer.train()
    assert not torch.equal(before, ensemble.weights.scores.detach())
    assert float(ensemble.weights().detach().sum()) == pytest.approx(1.0)
    assert all("ensemble_nll" in h for h in trainer.state.log_history if "loss" in h)
    assert not hasattr(student, DistilTrainer.ENSEMBLE)
    trainer.save_model(str(tmp_path / "student"))
    saved = AutoModelForSeq2SeqLM.from_pretrained(str(tmp_path / "student"))
    assert not any("distil" in k or "scores" in k for k in saved.state_dict())
    assert set(saved.state_dict()) == set(student.state_dict())


# -- method 7: mutual learning ----------------------------------------------------------------------------------

def _pair(tiny_teacher):
    return MutualPair(derive_student(tiny_teacher, StudentConfig(depth_ratio=0.5), seed=1),
                      derive_student(tiny_teacher, StudentConfig(depth_ratio=0.5, init_from_teacher=False), seed=2))


def test_mutual_loss_is_ce_plus_weighted_kl_to_the_detached_peer(tmp_path, tokenizer, tiny_teacher, verse_pairs):
    pair = _pair(tiny_teacher).train()
    distill = DistillConfig(alpha=0.0, beta=1.0, temperature=1.0, mutual=True, mutual_weight=0.7)
    trainer = _trainer(tmp_path, tokenizer, verse_pairs[:8], pair, None, distill)
    batch = _batch(tokenizer, verse_pairs[:8])
    n = int(target_mask(batch["labels"]).sum())
    loss = trainer.compute_loss(pair, batch, num_items_in_batch=n)
    fwd = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
               decoder_input_ids=batch["decoder_input_ids"])
    with torch.no_grad():
        za, zb = pair.first(**fwd).logits, pair.second(**fwd).logits
        mask = target_mask(batch["labels"])
        ce_a, _ = label_smoothed_cross_entropy(za, batch["labels"])
        ce_b, _ = label_smoothed_cross_entropy(zb, batch["labels"])
        kl_ab = torch.nn.functional.kl_div(torch.log_softmax(za, -1), torch.log_softmax(zb, -1), log_target=True,
                                           reduction="none").sum(-1)[mask].sum()  # KL(p_b || p_a)
        kl_ba = torch.nn.functional.kl_div(torch.log_softmax(zb, -1), torch.log_softmax(za, -1), log_target=True,
                                           reduction="none").sum(-1)[mask].sum()
    expected = (ce_a + 0.7 * kl_ab + ce_b + 0.7 * kl_ba) / n
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    # The peer is a detached target: student a's gradient is that of CE_a + 0.7 KL(b || a) alone.
    loss.backward()
    grad_a = [p.grad.clone() for p in pair.first.parameters() if p.grad is not None]
    pair.zero_grad()
    za = pair.first(**fwd).logits
    ((label_smoothed_cross_entropy(za, batch["labels"])[0]
      + 0.7 * forward_kl(za, zb, mask)[0]) / n).backward()
    assert all(torch.allclose(g, p.grad, atol=1e-6) for g, p in
               zip(grad_a, [p for p in pair.first.parameters() if p.grad is not None]))


def test_mutual_training_trains_both_students_and_saves_each_as_plain_hf(tmp_path, tokenizer, tiny_teacher,
                                                                         verse_pairs):
    from distilmt.config import TrainConfig
    from distilmt.training.loop import train_seq2seq

    student = derive_student(tiny_teacher, StudentConfig(depth_ratio=0.5), seed=1)
    cfg = TrainConfig(max_steps=2, warmup_steps=0, batch_tokens=400, bf16=False, label_smoothing=0.1, seed=4,
                      eval_steps=1)
    before = [copy.deepcopy(student.state_dict())] * 2  # distill.mutual_peer=copy: the peer starts as the student
    distill = DistillConfig(alpha=0.5, beta=0.5, mutual=True, mutual_weight=0.5)  # with the teacher too
    out = tmp_path / "student-kd"
    trainer = train_seq2seq(student, tokenizer, verse_pairs[:40], verse_pairs[40:46], cfg, out, tmp_path / "tb", 64,
                            teacher=LiveTeacher(tiny_teacher), distill=distill)
    pair = trainer.model
    assert isinstance(pair, MutualPair) and pair.first is student
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert logged and all({"ce", "kd", "mutual", "ce_b", "kd_b", "mutual_b"} <= set(h) for h in logged)
    assert any("eval_bleu" in h for h in trainer.state.log_history)  # checkpoints saved and the best reloaded
    for directory, model, old in zip((out, out / "peer"), pair.students, before):
        assert any(not torch.equal(old[k], v) for k, v in model.state_dict().items())
        loaded = AutoModelForSeq2SeqLM.from_pretrained(str(directory))
        assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
        assert (directory / "tokenizer.json").is_file()


def test_mutual_settings_fail_with_one_clear_sentence(tmp_path, tokenizer, tiny_teacher, verse_pairs):
    from distilmt.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match="distill.mutual: the trainer's model must be a distilmt.mutual.MutualPair"):
        _trainer(tmp_path, tokenizer, verse_pairs[:8], copy.deepcopy(tiny_teacher), None,
                 DistillConfig(alpha=0.0, beta=1.0, mutual=True))
    for values, field in ((dict(mutual=True, on_policy_ratio=0.5), "distill.on_policy_ratio"),
                          (dict(mutual_weight=-1), "distill.mutual_weight"),
                          (dict(on_policy_ratio=1.5), "distill.on_policy_ratio"),
                          (dict(on_policy_divergence="kl"), "distill.on_policy_divergence"),
                          (dict(on_policy_ratio=0.5, teacher_cache=True), "distill.on_policy_ratio"),
                          (dict(teacher_weights=[1, 2]), "distill.teacher_weights"),
                          (dict(teachers=["a", "b"], teacher_weights=[1]), "distill.teacher_weights"),
                          (dict(teachers=["a"], teacher_weights="best"), "distill.teacher_weights"),
                          (dict(teachers="a"), "distill.teachers")):
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            from_dict(DistillConfig, values, "distill")


def test_mutual_peer_starts_as_a_copy_of_the_student_or_fresh(tiny_teacher):
    from distilmt.config import ConfigError
    from distilmt.models.mutual import make_peer

    student = derive_student(tiny_teacher, StudentConfig(depth_ratio=0.5), seed=1)
    copied, fresh = make_peer(student, "copy", 5), make_peer(student, "fresh", 5)
    state = student.state_dict()
    assert all(torch.equal(v, copied.state_dict()[k]) for k, v in state.items())
    assert copied.model.encoder.layers[0].fc1.weight is not student.model.encoder.layers[0].fc1.weight
    assert not torch.equal(fresh.model.encoder.layers[0].fc1.weight, student.model.encoder.layers[0].fc1.weight)
    assert DistillConfig(mutual=True).mutual_peer == "copy"
    with pytest.raises(ConfigError, match="distill.mutual_peer"):
        DistillConfig(mutual=True, mutual_peer="twin")
