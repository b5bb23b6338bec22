"""A large teacher placed apart from its student: teacher.device (another device, the CPU, or sharded with
device_map) and teacher.inference_dtype (half-precision weights), on the live teacher's real forward pass."""

from __future__ import annotations

import pytest
import torch

from distilmt.config import RunConfig, StudentConfig, TeacherConfig
from distilmt.data.batching import ParallelDataset, Seq2SeqCollator
from distilmt.errors import ConfigError
from distilmt.losses import forward_kl
from distilmt.models.build import derive_student
from distilmt.models.loading import load_seq2seq, placement
from distilmt.recipes.stages import teacher_placement
from distilmt.teachers.signal import LiveTeacher


@pytest.fixture()
def teacher_dir(tmp_path, tiny_teacher, tokenizer):
    tiny_teacher.save_pretrained(tmp_path / "teacher")
    tokenizer.save_pretrained(tmp_path / "teacher")
    return tmp_path / "teacher"


@pytest.fixture()
def batch(tokenizer, verse_pairs, tiny_teacher):
    data = ParallelDataset(verse_pairs[:6], tokenizer, max_tokens=40)
    return Seq2SeqCollator(tokenizer.pad_token_id, tiny_teacher.config.decoder_start_token_id)([data[i] for i in range(len(data))])


def test_placement_is_what_from_pretrained_is_given():
    assert placement() == {} and placement("", "auto") == {}
    assert placement("cpu", "bf16") == {"device_map": "cpu", "dtype": torch.bfloat16}
    assert placement("auto", "fp16") == {"device_map": "auto", "dtype": torch.float16}


def test_a_bf16_teacher_gives_the_fp32_teachers_kd_signal_within_rounding(teacher_dir, batch, tokenizer):
    full, _ = load_seq2seq(teacher_dir)
    half, _ = load_seq2seq(teacher_dir, device="cpu", dtype="bf16")
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    assert sum(p.nbytes for p in half.parameters()) * 2 == sum(p.nbytes for p in full.parameters())
    exact, rounded = LiveTeacher(full).logits(batch), LiveTeacher(half, placed=True).logits(batch)
    assert rounded.device == batch["input_ids"].device and rounded.shape == exact.shape
    assert (rounded.float() - exact).abs().max() < 0.05 * exact.abs().max()
    # the KD loss a student gets from it: the same to within 2 %
    student = derive_student(full, StudentConfig(init_from_teacher=False), seed=3)  # far from the teacher
    with torch.no_grad():
        s_logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           decoder_input_ids=batch["decoder_input_ids"]).logits
    mask = batch["labels"] != -100
    kd_exact, n = forward_kl(s_logits, exact, mask)
    kd_rounded, _ = forward_kl(s_logits, rounded, mask)
    assert kd_rounded.dtype == torch.float32 and n == int(mask.sum())
    assert float(kd_rounded) == pytest.approx(float(kd_exact), rel=0.02)


def test_a_placed_teacher_stays_where_it_was_loaded(teacher_dir, batch):
    model, _ = load_seq2seq(teacher_dir, device="cpu")
    teacher = LiveTeacher(model, placed=True)
    # the trainer moves its teacher to the student's device; a placed one is left alone (on this CPU-only machine
    # moving it to cuda would raise)
    assert teacher.to(torch.device("cuda")) is teacher and model.device.type == "cpu"
    out = teacher.outputs(batch, hidden=True)
    assert out.decoder_hidden_states[-1].device == batch["input_ids"].device


def test_a_teacher_sharded_by_device_map_gives_the_same_logits(teacher_dir, batch):
    plain, _ = load_seq2seq(teacher_dir)
    sharded, _ = load_seq2seq(teacher_dir, device="auto")  # accelerate's device map: on this machine, the CPU
    assert sharded.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert torch.equal(LiveTeacher(sharded, placed=True).logits(batch), LiveTeacher(plain).logits(batch))


def test_teacher_device_and_dtype_are_checked_by_name():
    with pytest.raises(ConfigError, match="teacher.device"):
        TeacherConfig(device="gpu")
    with pytest.raises(ConfigError, match="teacher.inference_dtype"):
        TeacherConfig(inference_dtype="int4")
    assert teacher_placement(RunConfig(teacher=TeacherConfig(device="cpu", inference_dtype="bf16"))) == \
        {"device": "cpu", "dtype": "bf16"}
    assert teacher_placement(RunConfig()) == {}
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            teacher_placement(RunConfig(teacher=TeacherConfig(device="cuda:1")))
