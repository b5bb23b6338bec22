import dataclasses
from pathlib import Path

import pytest
import torch

from distilmt.config import StudentConfig, TeacherConfig
from distilmt.errors import ModelError
from distilmt.models.build import build_model, derive_student, select_weights, spread_layers, student_shape
from distilmt.models.loading import load_seq2seq
from distilmt.models.vocab import check_same_vocabulary


def test_spread_layers_keeps_first_and_last():
    assert spread_layers(6, 3) == [0, 2, 5] or spread_layers(6, 3) == [0, 3, 5]
    assert spread_layers(3, 2) == [0, 2]
    assert spread_layers(4, 1) == [3]


@pytest.mark.parametrize("arch", ["prenorm", "marian"])
def test_student_copies_spread_out_teacher_layers_when_width_matches(tokenizer, arch):
    teacher = build_model(TeacherConfig(arch=arch, d_model=32, encoder_layers=3, decoder_layers=3, ffn_dim=64, heads=4),
                          tokenizer)
    student = derive_student(teacher, StudentConfig(depth_ratio=0.67, decoder_depth_ratio=0.34))
    assert type(student) is type(teacher)
    assert student.config.encoder_layers == 2 and student.config.decoder_layers == 1
    ts, ss = teacher.state_dict(), student.state_dict()
    enc = "model.encoder.layers.{}.fc1.weight"
    dec = "model.decoder.layers.{}.fc1.weight"
    assert torch.equal(ss[enc.format(0)], ts[enc.format(0)])
    assert torch.equal(ss[enc.format(1)], ts[enc.format(2)])
    assert torch.equal(ss[dec.format(0)], ts[dec.format(2)])
    assert torch.equal(ss["model.shared.weight"], ts["model.shared.weight"])
    assert student.num_parameters() < teacher.num_parameters()


def test_narrow_student_is_fresh_and_smaller(tokenizer, tiny_teacher):
    cfg = StudentConfig(depth_ratio=0.5, width_ratio=0.5, heads_ratio=0.5, narrow_init="random")
    shape = student_shape(tiny_teacher.config, cfg)
    assert shape == {"d_model": 16, "ffn": 32, "heads": 2, "enc": 1, "dec": 1}
    student = derive_student(tiny_teacher, cfg)
    assert student.config.d_model == 16 and student.config.encoder_attention_heads == 2
    out = student(input_ids=torch.tensor([[5, 6, 1]]), decoder_input_ids=torch.tensor([[1, 7]]))
    assert out.logits.shape == (1, 2, len(tokenizer))


def test_select_weights_takes_evenly_spaced_entries_on_the_cut_axes():
    teacher = torch.arange(4 * 6, dtype=torch.float32).reshape(4, 6)  # entry (r, c) = 6r + c
    picked = select_weights(teacher, torch.Size([2, 3]))
    # rows 0, 2 (i * 4 // 2) and columns 0, 2, 4 (i * 6 // 3), by hand
    assert picked.tolist() == [[0.0, 2.0, 4.0], [12.0, 14.0, 16.0]]
    assert select_weights(teacher, torch.Size([4, 6])).equal(teacher)  # nothing to cut
    assert select_weights(teacher, torch.Size([5, 3])) is None  # larger than the teacher on an axis
    assert select_weights(teacher, torch.Size([24])) is None


@pytest.mark.parametrize("arch", ["prenorm", "marian"])
def test_a_narrow_student_selects_the_same_teacher_dimensions_in_every_tensor(tokenizer, arch, tmp_path):
    teacher = build_model(TeacherConfig(arch=arch, d_model=32, encoder_layers=3, decoder_layers=3, ffn_dim=64, heads=4),
                          tokenizer, seed=3)
    cfg = StudentConfig(depth_ratio=0.67, decoder_depth_ratio=0.34, width_ratio=0.5, narrow_init="select")
    student = derive_student(teacher, cfg, seed=1)
    ts, ss = teacher.state_dict(), student.state_dict()
    dims, hidden = torch.arange(16) * 2, torch.arange(32) * 2  # d_model 32 -> 16, ffn 64 -> 32
    assert torch.equal(ss["model.shared.weight"], ts["model.shared.weight"][:, dims])
    # encoder layer 1 of the student is teacher layer 2 (spread out); decoder layer 0 the teacher's last
    assert torch.equal(ss["model.encoder.layers.1.fc1.weight"], ts["model.encoder.layers.2.fc1.weight"][hidden][:, dims])
    assert torch.equal(ss["model.decoder.layers.0.fc2.weight"], ts["model.decoder.layers.2.fc2.weight"][dims][:, hidden])
    # 4 heads of 8 dimensions -> 4 heads of 4: student head h takes dimensions 0, 2, 4, 6 of teacher head h
    q_t, q_s = ts["model.encoder.layers.0.self_attn.q_proj.weight"], ss["model.encoder.layers.0.self_attn.q_proj.weight"]
    assert torch.equal(q_s.view(4, 4, 16)[2], q_t.view(4, 8, 32)[2, ::2][:, ::2])
    norm = "model.decoder.layers.0.final_layer_norm.weight"
    assert torch.equal(ss[norm], ts[norm.replace("layers.0", "layers.2")][dims])
    if arch == "marian":  # the sinusoidal table is the student's own for its width, as it is when reloaded
        fresh = derive_student(teacher, StudentConfig(depth_ratio=0.67, decoder_depth_ratio=0.34, width_ratio=0.5))
        assert torch.equal(ss["model.encoder.embed_positions.weight"], fresh.state_dict()["model.encoder.embed_positions.weight"])
    # select is the default; random keeps nothing of the teacher in a narrow student
    assert StudentConfig().narrow_init == "select"
    random = derive_student(teacher, dataclasses.replace(cfg, narrow_init="random"), seed=1)
    assert not torch.equal(random.state_dict()["model.shared.weight"], ss["model.shared.weight"])
    student.save_pretrained(tmp_path)  # and it reloads as saved
    tokenizer.save_pretrained(tmp_path)
    reloaded, _ = load_seq2seq(tmp_path)
    for name, tensor in reloaded.state_dict().items():
        assert torch.equal(tensor, ss[name]), name


def test_saved_model_loads_with_plain_transformers(tmp_path, tokenizer, tiny_teacher):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tiny_teacher.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    enc = tok(["In the beginning"], return_tensors="pt")
    assert model.generate(**enc, max_new_tokens=5).shape[0] == 1
    loaded, _ = load_seq2seq(tmp_path)
    assert torch.equal(loaded.state_dict()["model.shared.weight"], tiny_teacher.state_dict()["model.shared.weight"])


def test_load_seq2seq_errors_are_one_clear_sentence(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        load_seq2seq(tmp_path)
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=16, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="not a seq2seq"):
        load_seq2seq(tmp_path)


def test_vocabulary_mismatch_is_refused(tmp_path, tokenizer, verse_pairs):
    from distilmt.data.tokenizer import train_tokenizer

    other = train_tokenizer((t for p in verse_pairs[:400] for t in p), 300, tmp_path / "other")
    with pytest.raises(ModelError, match="vocabulary has"):
        check_same_vocabulary(tokenizer, other)
    check_same_vocabulary(tokenizer, tokenizer)  # same tokenizer: fine


def test_a_truncated_weights_file_is_one_line(tmp_path, tiny_teacher, tokenizer):
    from distilmt.errors import ModelLoadError, RunDirError
    from distilmt.rundir import check_writable

    tiny_teacher.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match=r"model weights could not be loaded .*a truncated file\?") as error:
        load_seq2seq(tmp_path)
    assert "\n" not in str(error.value)
    with pytest.raises(RunDirError, match=r"/proc: cannot write here"):
        check_writable(Path("/proc"))
