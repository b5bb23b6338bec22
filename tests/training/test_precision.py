"""train.precision: auto resolved per device (capabilities monkeypatched: no GPU is needed), explicit values the
device cannot run refused in one line naming the key, and the old bf16: true/false read as bf16/fp32."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from distilmt.cli import main
from distilmt.config import PRESETS, ConfigError, TrainConfig, load_config, save_config
from distilmt.training import precision as prec
from distilmt.training.loop import training_arguments
from helpers import write_config


def _device(monkeypatch, cuda: bool = False, native_bf16: bool = False, emulated_bf16: bool = False,
            cpu_bf16: bool = False):
    """Pretend to be a machine: a CUDA GPU (native bf16 = compute capability 8+, or only emulated) or a CPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: native_bf16 or (including_emulation and emulated_bf16))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    monkeypatch.setattr(prec, "cpu_has_bf16", lambda: cpu_bf16)


@pytest.mark.parametrize("machine, expected", [
    (dict(cuda=True, native_bf16=True), "bf16"),            # A100, H100: bf16
    (dict(cuda=True, emulated_bf16=True), "fp16"),          # T4, V100: bf16 only emulated -> fp16
    (dict(cuda=True), "fp16"),                              # a GPU without bf16 at all
    (dict(cpu_bf16=True), "bf16"),                          # a CPU with AVX512-BF16 or AMX
    (dict(), "fp32"),                                       # any other CPU
])
def test_auto_picks_what_the_device_runs_natively(monkeypatch, machine, expected):
    _device(monkeypatch, **machine)
    assert prec.resolve_precision("auto") == expected
    assert prec.resolve_precision(expected) == expected and prec.resolve_precision("fp32") == "fp32"


@pytest.mark.parametrize("machine, value, needle", [
    (dict(cuda=True), "bf16", "student_train.precision: bf16 is not supported by this GPU (Tesla T4); use auto "
                              "(fp16 here), fp16 or fp32"),
    (dict(cpu_bf16=True), "fp16", "student_train.precision: fp16 needs a CUDA GPU and none is visible"),
    (dict(), "fp16", "use auto (fp32 here), bf16 or fp32"),
])
def test_a_precision_the_device_cannot_run_is_one_line_naming_the_key(monkeypatch, machine, value, needle):
    _device(monkeypatch, **machine)
    with pytest.raises(ConfigError) as info:
        prec.resolve_precision(value, "student_train.precision")
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_explicit_values_that_run_are_kept(monkeypatch):
    _device(monkeypatch, cuda=True, emulated_bf16=True)  # transformers accepts emulated bf16 when asked for
    assert [prec.resolve_precision(v) for v in ("bf16", "fp16", "fp32")] == ["bf16", "fp16", "fp32"]
    _device(monkeypatch)  # bf16 on a CPU without native bf16 runs (emulated, slowly), as bf16: true always did
    assert prec.resolve_precision("bf16") == "bf16"


def test_cpu_bf16_is_read_from_torch_or_the_cpu_flags(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert prec.cpu_has_bf16()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert not prec.cpu_has_bf16()
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")  # a torch without the probes: /proc/cpuinfo
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    real_path = Path
    monkeypatch.setattr(prec, "Path", lambda p: real_path(cpuinfo) if p == "/proc/cpuinfo" else real_path(p))
    assert prec.cpu_has_bf16()
    cpuinfo.write_text("flags\t\t: fpu sse2 avx2\n")
    assert not prec.cpu_has_bf16()


@pytest.mark.parametrize("cpu_bf16, bf16", [(True, True), (False, False)])
def test_the_trainer_gets_the_resolved_precision(monkeypatch, tmp_path, cpu_bf16, bf16):
    _device(monkeypatch, cpu_bf16=cpu_bf16)
    args = training_arguments(TrainConfig(max_steps=2, precision="auto"), tmp_path, steps_per_epoch=2)
    assert (args.bf16, args.fp16) == (bf16, False)
    args = training_arguments(TrainConfig(max_steps=2, precision="fp32"), tmp_path, steps_per_epoch=2)
    assert (args.bf16, args.fp16) == (False, False)
    with pytest.raises(ConfigError, match="^train.precision: fp16 needs a CUDA GPU"):
        training_arguments(TrainConfig(max_steps=2, precision="fp16"), tmp_path, steps_per_epoch=2)


@pytest.mark.parametrize("name", PRESETS)
def test_presets_use_auto(name):
    cfg = load_config(name)
    assert cfg.teacher_train.precision == cfg.student_train.precision == "auto"


def test_the_old_bf16_key_still_reads(tmp_path):
    # YAML files and saved run configs written before precision: bf16 true -> bf16, false -> fp32
    assert TrainConfig().precision == "auto"
    assert TrainConfig(bf16=True).precision == "bf16" and TrainConfig(bf16=False).precision == "fp32"
    cfg = load_config(file=write_config(tmp_path))  # tests/helpers.TINY still says bf16: false
    assert cfg.teacher_train.precision == cfg.student_train.precision == "fp32"
    save_config(cfg, tmp_path / "saved.yaml")  # saved with precision only
    saved = yaml.safe_load((tmp_path / "saved.yaml").read_text())
    assert saved["student_train"]["precision"] == "fp32" and "bf16" not in saved["student_train"]
    assert dataclasses.replace(cfg.student_train, max_steps=3).precision == "fp32"
    # a precision that is set wins over the old key in the same file; overrides apply in order, the old name too
    assert TrainConfig(bf16=False, precision="auto").precision == "auto"
    assert load_config("quick", overrides=["student_train.bf16=false"]).student_train.precision == "fp32"
    assert load_config(file=write_config(tmp_path), overrides=["student_train.precision=auto"]).student_train \
        .precision == "auto"
    assert load_config("quick", overrides=["teacher_train.precision=fp32", "teacher_train.bf16=true"]) \
        .teacher_train.precision == "bf16"


@pytest.mark.parametrize("override, message", [
    ("student_train.precision=fp8", "student_train.precision: 'fp8' is not one of auto, bf16, fp16, fp32"),
    ("teacher_train.bf16=maybe", "teacher_train.bf16: expected true or false, got 'maybe'"),
])
def test_wrong_precision_values_are_refused_naming_the_key(override, message):
    with pytest.raises(ConfigError) as info:
        load_config("quick", overrides=[override])
    assert str(info.value) == message


def test_a_run_with_a_precision_the_device_cannot_run_stops_before_any_stage(monkeypatch, tmp_path, capsys):
    _device(monkeypatch)  # a CPU without bf16: fp16 cannot run
    run_dir = tmp_path / "run"
    code = main(["run", "--config", str(write_config(tmp_path)), "--set", "student_train.precision=fp16",
                 "--run-dir", str(run_dir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "student_train.precision: fp16 needs a CUDA GPU" in err[0]
    assert not (run_dir / "data").exists()


def test_fp16_loss_scale_probes_are_not_counted_as_divergence(tmp_path):
    from types import SimpleNamespace

    from distilmt.errors import TrainingDiverged
    from distilmt.training.callbacks import NonFiniteGuard

    model = torch.nn.Linear(2, 2)
    state = SimpleNamespace(global_step=0)

    def update(guard, finite: bool, fp16: bool):
        for p in model.parameters():
            p.grad = torch.ones_like(p) if finite else torch.full_like(p, float("inf"))
        guard.on_pre_optimizer_step(SimpleNamespace(fp16=fp16), state, None, model=model)
        state.global_step += 1
        return all(p.grad is None for p in model.parameters())  # dropped

    guard = NonFiniteGuard("s", tmp_path, limit=2)
    # fp16: an overflow after a clean update is the GradScaler raising its scale: dropped, not counted
    for _ in range(5):
        assert not update(guard, True, fp16=True)
        assert update(guard, False, fp16=True)
    assert guard.skipped == []
    assert update(guard, False, fp16=True)  # a second overflow in a row counts
    with pytest.raises(TrainingDiverged):  # and the limit (2) stops the training
        update(guard, False, fp16=True)
    guard = NonFiniteGuard("s", tmp_path, limit=2)  # bf16/fp32: every non-finite update counts
    assert not update(guard, True, fp16=False) and update(guard, False, fp16=False)
    assert len(guard.skipped) == 1
