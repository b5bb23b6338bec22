"""Export: CTranslate2 round trip (same greedy output as HF), plain HF directory, safe output directories."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from distilmt.errors import ExportError
from distilmt.export import export_ctranslate2, export_hf
from distilmt.models.loading import EXPORT_INFO
from distilmt.models.size import count_parameters
from distilmt.models.translators import Ct2Translator, HfTranslator, open_model
from helpers import make_tiny_model, needs_ct2, toy_sentences


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny model per architecture, trained a little on a copy task so greedy outputs are varied."""
    root = tmp_path_factory.mktemp("trained")
    return {arch: make_tiny_model(root / arch, arch, d_model=32, layers=1, train_steps=40)
            for arch in ("marian", "prenorm")}


def _greedy(translator, sentences):
    return translator.translate(sentences, num_beams=1, batch_size=8, max_new_tokens=24)


@needs_ct2
@pytest.mark.parametrize("arch", ["marian", "prenorm"])
def test_ct2_float32_matches_hf_greedy_exactly(trained, tmp_path, arch):
    out = export_ctranslate2(trained[arch], tmp_path / "ct2", quantization="float32")
    sentences = toy_sentences(24, seed=7)
    hf = HfTranslator.load(trained[arch])
    ct2 = open_model(out, inter_threads=1)
    assert isinstance(ct2, Ct2Translator)
    hf_out, ct2_out = _greedy(hf, sentences), _greedy(ct2, sentences)
    assert len(set(hf_out)) > 3, "the tiny model should give varied output"
    assert ct2_out == hf_out
    # token by token too (the strings could hide a difference in special tokens)
    tok = hf.tokenizer
    assert [tok(s)["input_ids"] for s in ct2_out] == [tok(s)["input_ids"] for s in hf_out]


@needs_ct2
@pytest.mark.parametrize("arch", ["marian", "prenorm"])
def test_ct2_int8_is_close_to_hf(trained, tmp_path, arch):
    out = export_ctranslate2(trained[arch], tmp_path / "ct2")  # int8 is the default
    info = json.loads((out / EXPORT_INFO).read_text())
    assert info["quantization"] == "int8" and info["format"] == "ctranslate2"
    sentences = toy_sentences(24, seed=7)
    hf_out, ct2_out = _greedy(HfTranslator.load(trained[arch]), sentences), _greedy(Ct2Translator(out), sentences)
    same = sum(a == b for a, b in zip(hf_out, ct2_out))
    assert same >= len(sentences) // 2, f"only {same}/{len(sentences)} int8 outputs equal the float model's"


@needs_ct2
def test_ct2_dir_is_self_contained_and_records_the_source(trained, tmp_path):
    out = export_ctranslate2(trained["prenorm"], tmp_path / "ct2", quantization="float32")
    names = {p.name for p in out.iterdir()}
    assert {"model.bin", "config.json", "tokenizer.json", EXPORT_INFO} <= names
    assert not list(tmp_path.glob(".*partial*"))
    hf = HfTranslator.load(trained["prenorm"])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        ct2 = Ct2Translator(out, intra_threads=1)
        # CTranslate2 set the process's OpenMP threads to 1; PyTorch work after it must keep its own 2
        assert torch.get_num_threads() == 2
        beam = ct2.translate(toy_sentences(4, seed=1), num_beams=4, max_new_tokens=10)
        assert torch.get_num_threads() == 2, "translating with CTranslate2 changed PyTorch's thread count"
    finally:
        torch.set_num_threads(threads)
    assert ct2.num_parameters()["params"] == count_parameters(hf.model)["params"]
    assert ct2.num_parameters()["params_non_embedding"] == count_parameters(hf.model)["params_non_embedding"]
    assert 0 < ct2.size_mb()
    assert len(beam) == 4 and all(isinstance(s, str) for s in beam)


@needs_ct2
def test_export_refuses_to_overwrite_without_force(trained, tmp_path):
    out = tmp_path / "ct2"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(ExportError, match="not empty.*force=True"):
        export_ctranslate2(trained["marian"], out)
    assert (out / "keep.txt").exists()
    export_ctranslate2(trained["marian"], out, force=True)
    assert not (out / "keep.txt").exists() and (out / "model.bin").exists()
    with pytest.raises(ExportError, match="quantization"):
        export_ctranslate2(trained["marian"], tmp_path / "other", quantization="int3")


def test_missing_ctranslate2_gives_an_install_hint(trained, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # makes `import ctranslate2` raise ImportError
    with pytest.raises(ImportError, match="pip install ctranslate2"):
        export_ctranslate2(trained["marian"], tmp_path / "ct2")
    assert not (tmp_path / "ct2").exists()


@pytest.mark.parametrize("arch", ["marian", "prenorm"])
def test_hf_export_loads_with_transformers_alone(trained, tmp_path, arch):
    """transformers 5 removed pipeline("translation"), so this checks the Auto* classes + generate() instead."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    out = export_hf(trained[arch], tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert "auto_map" not in config  # no custom code needed
    model = AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    batch = tokenizer(["the cat sat", "a red house"], return_tensors="pt", padding=True)
    with torch.inference_mode():
        ids = model.generate(**batch, num_beams=1, do_sample=False, max_new_tokens=12)
    plain = [s.strip() for s in tokenizer.batch_decode(ids, skip_special_tokens=True)]
    original = HfTranslator.load(trained[arch])
    assert plain == original.translate(["the cat sat", "a red house"], num_beams=1, max_new_tokens=12)
    assert json.loads((out / EXPORT_INFO).read_text())["format"] == "huggingface"
    with pytest.raises(ExportError, match="not empty"):
        export_hf(trained[arch], out)
    with pytest.raises(ExportError, match="differ"):
        export_hf(trained[arch], trained[arch], force=True)
