"""Causal-LM teachers and students on tiny Qwen2-style models with byte-level BPE tokenizers trained on real verses
(tests/standins.py), saved with save_pretrained and loaded back through distilmt.causal: prompt masking, the
vocabulary check, token-level KD between causal LMs, generation that stops at eos, and a causal teacher's labels for
a seq2seq student through `distilmt generate-labels`."""

from __future__ import annotations

import copy
import io
import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from distilmt.config import DistillConfig, SeqKDConfig, TrainConfig
from distilmt.data.prompt import CausalCollator, TranslationPrompt
from distilmt.errors import ModelError
from distilmt.losses import IGNORE_INDEX, forward_kl, label_smoothed_cross_entropy
from distilmt.models.loading import load_causal
from distilmt.models.translators import CausalTranslator
from distilmt.models.vocab import check_shared_vocabulary
from distilmt.recipes.student import train_causal
from distilmt.teachers.signal import CausalTeacher
from distilmt.training.terms import shift_for_loss
from standins import byte_bpe, qwen2, save

PLAIN = "{src_lang}: {source}\n{tgt_lang}:"


@pytest.fixture(scope="module")
def texts(verse_pairs):
    return [t for pair in verse_pairs[:400] for t in pair]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, texts) -> Path:
    tokenizer = byte_bpe(texts, 400, chat=True)
    return save(qwen2(tokenizer, seed=0, pad_to=64), tokenizer, tmp_path_factory.mktemp("qwen-teacher"))


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory, texts) -> Path:
    """Same tokenizer, without a chat template."""
    tokenizer = byte_bpe(texts, 400, chat=False)
    return save(qwen2(tokenizer, seed=1), tokenizer, tmp_path_factory.mktemp("qwen-plain"))


SHORT = [("And God said.", "És szólt Isten."), ("Jesus wept.", "Jézus sírt."), ("Amen.", "Ámen."),
         ("Pray always.", "Imádkozzatok mindig.")]


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory, teacher_dir) -> Path:
    """The chat teacher after memorising SHORT (real training through train_causal): it ends its answers."""
    model, tokenizer = load_causal(teacher_dir)
    prompt = TranslationPrompt(tokenizer, "auto", "en", "hu")
    work = tmp_path_factory.mktemp("qwen-trained")
    cfg = TrainConfig(max_steps=300, batch_tokens=400, warmup_steps=5, learning_rate=3e-3, label_smoothing=0.0,
                      weight_decay=0.0, bf16=False)
    train_causal(model, prompt, SHORT * 4, cfg, work / "model", work / "tb", 64)
    return work / "model"


# -- prompt and masking ------------------------------------------------------------------------------------
def test_labels_are_minus_100_exactly_on_the_prompt_and_the_padding(plain_dir):
    _, tokenizer = load_causal(plain_dir)
    prompt = TranslationPrompt(tokenizer, PLAIN, "en", "hu")
    assert prompt.text("Jesus wept.") == "English: Jesus wept.\nHungarian:"
    example = prompt.example("Jesus wept.", "Jézus sírt.")
    by_hand_prompt = tokenizer("English: Jesus wept.\nHungarian:", add_special_tokens=False)["input_ids"]
    by_hand_target = tokenizer(" Jézus sírt.", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert example["input_ids"] == by_hand_prompt + by_hand_target
    assert example["labels"] == [IGNORE_INDEX] * len(by_hand_prompt) + by_hand_target
    assert tokenizer.decode(by_hand_target, skip_special_tokens=True) == " Jézus sírt."

    longer = prompt.example("And God said unto Moses.", "És monda Isten Mózesnek.")
    batch = CausalCollator(tokenizer.pad_token_id)([example, longer])
    n = len(example["input_ids"])
    assert batch["labels"][0].tolist() == example["labels"] + [IGNORE_INDEX] * (batch["labels"].shape[1] - n)
    assert batch["attention_mask"][0].tolist() == [1] * n + [0] * (batch["labels"].shape[1] - n)
    assert batch["input_ids"][0, n:].eq(tokenizer.pad_token_id).all()
    assert batch["labels"][1].tolist() == longer["labels"]  # the longest row has no padding


def test_the_loss_is_the_mean_nll_of_the_target_tokens_only(plain_dir):
    """The trainer's CE (shift_for_loss + label_smoothed_cross_entropy) equals the hand-computed mean of
    -log p(target token | everything before it) over target tokens; prompt and padding count for nothing."""
    model, tokenizer = load_causal(plain_dir)
    prompt = TranslationPrompt(tokenizer, PLAIN, "en", "hu")
    examples = [prompt.example("Jesus wept.", "Jézus sírt."), prompt.example("And God said.", "És szólt Isten.")]
    batch = CausalCollator(tokenizer.pad_token_id)(examples)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        student, _, labels = shift_for_loss(logits, None, batch["labels"])
        ce, n_tokens = label_smoothed_cross_entropy(student, labels)
        nll, count = 0.0, 0
        for example in examples:
            ids = torch.tensor([example["input_ids"]])
            row_logits = model(input_ids=ids).logits[0]
            n_prompt = example["labels"].count(IGNORE_INDEX)
            for position in range(n_prompt, len(example["input_ids"])):  # each target token and the eos
                nll -= torch.log_softmax(row_logits[position - 1], -1)[ids[0, position]].item()
                count += 1
    assert int(n_tokens) == count == sum(len(e["labels"]) - e["labels"].count(IGNORE_INDEX) for e in examples)
    assert ce.item() / int(n_tokens) == pytest.approx(nll / count, rel=1e-5)


def test_kd_is_the_kl_over_the_target_positions_only(plain_dir):
    """The teacher scores the same sequence; the KD sum is KL(p_teacher || p_student) at the positions that
    predict a target token (or the eos), nowhere else, computed here by hand one example at a time."""
    student, tokenizer = load_causal(plain_dir)
    teacher = qwen2(tokenizer, seed=9, pad_to=128)  # another model with the same vocabulary, padded otherwise
    prompt = TranslationPrompt(tokenizer, PLAIN, "en", "hu")
    examples = [prompt.example("Jesus wept.", "Jézus sírt."), prompt.example("And God said.", "És szólt Isten.")]
    batch = CausalCollator(tokenizer.pad_token_id)(examples)
    with torch.no_grad():
        out = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        signal = CausalTeacher(teacher, len(tokenizer)).logits(batch)
        s_logits, t_logits, labels = shift_for_loss(out, signal, batch["labels"])
        kd, n = forward_kl(s_logits, t_logits, labels.ne(IGNORE_INDEX), 1.0)
        by_hand = 0.0
        for example in examples:
            ids = torch.tensor([example["input_ids"]])
            s_row = student(input_ids=ids).logits[0, :, : len(tokenizer)]
            t_row = teacher(input_ids=ids).logits[0, :, : len(tokenizer)]
            for position in range(example["labels"].count(IGNORE_INDEX), len(example["input_ids"])):
                p_t = torch.softmax(t_row[position - 1], -1)
                by_hand += (p_t * (p_t.log() - torch.log_softmax(s_row[position - 1], -1))).sum().item()
    assert s_logits.shape[-1] == t_logits.shape[-1] == len(tokenizer)
    assert kd.item() == pytest.approx(by_hand, rel=1e-4) and by_hand > 0


def test_auto_uses_the_chat_template_and_the_target_ends_with_its_eos(teacher_dir, plain_dir):
    _, tokenizer = load_causal(teacher_dir)
    prompt = TranslationPrompt(tokenizer, "auto", "en", "hu")
    text = prompt.text("Jesus wept.")
    assert prompt.chat and text.startswith("<|im_start|>user\n") and text.endswith("<|im_start|>assistant\n")
    assert "English" in text and "Hungarian" in text and "Jesus wept." in text
    example = prompt.example("Jesus wept.", "Jézus sírt.")
    target = [i for i in example["labels"] if i != IGNORE_INDEX]
    assert target[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.decode(target, skip_special_tokens=True) == "Jézus sírt."  # no space after the chat turn
    _, plain = load_causal(plain_dir)
    assert not TranslationPrompt(plain, "auto", "en", "hu").chat  # no chat template: the default template


# -- vocabulary ----------------------------------------------------------------------------------------------
def test_padded_embeddings_of_other_sizes_share_the_real_vocabulary(tmp_path, teacher_dir):
    teacher, tokenizer = load_causal(teacher_dir)
    student_model = qwen2(tokenizer, seed=3, pad_to=128)
    student_dir = save(student_model, tokenizer, tmp_path / "student")
    student, student_tokenizer = load_causal(student_dir)
    rows_t, rows_s = (m.get_output_embeddings().weight.shape[0] for m in (teacher, student))
    assert rows_t != rows_s and min(rows_t, rows_s) > len(tokenizer)  # 448 vs 512 rows for 400 tokens
    size = check_shared_vocabulary(tokenizer, student_tokenizer, teacher, student, "qwen-teacher", "qwen-student")
    assert size == len(tokenizer)
    batch = CausalCollator(tokenizer.pad_token_id)([TranslationPrompt(tokenizer).example("Amen.", "Ámen.")])
    assert CausalTeacher(teacher, size).logits(batch).shape[-1] == size


def test_a_different_tokenizer_fails_with_one_line_naming_both_models(tmp_path, teacher_dir, texts):
    teacher, tokenizer = load_causal(teacher_dir)
    other = byte_bpe(texts[::2], 350, chat=True)  # English verses only, fewer tokens
    other_dir = save(qwen2(other, seed=4), other, tmp_path / "other")
    student, other_tokenizer = load_causal(other_dir)
    with pytest.raises(ModelError) as error:
        check_shared_vocabulary(tokenizer, other_tokenizer, teacher, student, "qwen-teacher", "other-student")
    message = str(error.value)
    assert "\n" not in message and "qwen-teacher" in message and "other-student" in message
    assert "sequence-level KD" in message and f"{len(other_tokenizer):,}" in message
    same_size = byte_bpe(texts[1::2], 400, chat=True)  # as many tokens, other merges: other ids for a text
    assert len(same_size) == len(tokenizer)
    with pytest.raises(ModelError, match="different token ids"):
        check_shared_vocabulary(tokenizer, same_size)


# -- token-level KD between causal LMs ----------------------------------------------------------------------
def _kd_log(trainer) -> list[float]:
    return [entry["kd"] for entry in trainer.state.log_history if "kd" in entry]


def test_kd_between_two_causal_lms_is_zero_for_a_student_equal_to_the_teacher(tmp_path, teacher_dir, verse_pairs):
    teacher, tokenizer = load_causal(teacher_dir)
    student = copy.deepcopy(teacher)
    student.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=128)  # other padding, same real vocabulary
    size = check_shared_vocabulary(tokenizer, tokenizer, teacher, student)
    prompt = TranslationPrompt(tokenizer, "auto", "en", "hu")
    cfg = TrainConfig(max_steps=3, batch_tokens=600, warmup_steps=0, learning_rate=1e-3, weight_decay=0.0,
                      label_smoothing=0.0, bf16=False)
    distill = DistillConfig(alpha=1.0, beta=0.0, temperature=2.0)
    trainer = train_causal(student, prompt, verse_pairs[:40], cfg, tmp_path / "same", tmp_path / "tb", 48,
                           teacher=CausalTeacher(teacher, size), distill=distill)
    assert trainer.state.global_step == 3 and _kd_log(trainer) and max(map(abs, _kd_log(trainer))) < 1e-6

    fresh = qwen2(tokenizer, seed=5, pad_to=128)  # a different student: a real KD signal that training lowers
    cfg = TrainConfig(max_steps=12, batch_tokens=600, warmup_steps=0, learning_rate=1e-2, label_smoothing=0.0,
                      bf16=False)
    trainer = train_causal(fresh, prompt, verse_pairs[:8], cfg, tmp_path / "kd", tmp_path / "tb2", 48,
                           teacher=CausalTeacher(teacher, size), distill=distill)
    kd = _kd_log(trainer)
    assert kd[0] > 0.01 and kd[-1] < kd[0] / 2, kd
    saved, _ = load_causal(tmp_path / "kd")  # a plain Hugging Face causal LM directory
    assert saved.get_output_embeddings().weight.shape[0] == 512


def test_features_a_causal_student_lacks_are_refused_by_name(tmp_path, teacher_dir, verse_pairs):
    from distilmt.config import ConfigError

    teacher, tokenizer = load_causal(teacher_dir)
    with pytest.raises(ConfigError, match="distill.hidden_weight"):
        train_causal(teacher, TranslationPrompt(tokenizer), verse_pairs[:4], TrainConfig(max_steps=1, bf16=False),
                     tmp_path, tmp_path / "tb", 48, distill=DistillConfig(hidden_weight=1.0))


# -- dev BLEU during training ----------------------------------------------------------------------------------
def _weights(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(directory) / "model.safetensors"))


def test_a_causal_student_gets_dev_bleu_and_keeps_its_best_checkpoint(tmp_path, trained_dir, caplog):
    """The memorised model, trained on wrong targets (each source with the next pair's target): dev BLEU on SHORT at
    each epoch end, with the seq2seq students' keys and log line; the first evaluation is the best (100), early
    stopping ends the training two evaluations later, and the model saved is that first checkpoint."""
    model, tokenizer = load_causal(trained_dir)
    prompt = TranslationPrompt(tokenizer, "auto", "en", "hu")
    wrong = [(s, t) for (s, _), (_, t) in zip(SHORT, SHORT[1:] + SHORT[:1])]
    cfg = TrainConfig(epochs=8, batch_tokens=400, warmup_steps=0, learning_rate=3e-4, lr_schedule="constant",
                      label_smoothing=0.0, weight_decay=0.0, bf16=False, early_stopping_patience=2, eval_beams=2)
    with caplog.at_level("INFO", logger="distilmt.training.trainer"):
        trainer = train_causal(model, prompt, wrong * 2, cfg, tmp_path / "student", tmp_path / "tb", 64,
                               dev_pairs=SHORT, name="causal-student")
    evals = [entry for entry in trainer.state.log_history if "eval_bleu" in entry]
    assert all({"eval_bleu", "eval_chrf", "eval_distinct", "eval_runtime"} <= set(entry) for entry in evals)
    steps_per_epoch = 2  # 8 pairs in batches of 400 tokens
    assert [entry["step"] for entry in evals] == [steps_per_epoch * k for k in (1, 2, 3)]  # stopped after 3 of 8
    assert trainer.state.global_step == 3 * steps_per_epoch
    bleus = [entry["eval_bleu"] for entry in evals]
    assert bleus[0] == pytest.approx(100) and trainer.state.best_metric == max(bleus)
    checkpoints = tmp_path / "student" / "checkpoints"
    assert Path(trainer.state.best_model_checkpoint) == checkpoints / f"checkpoint-{steps_per_epoch}"
    saved = _weights(tmp_path / "student")
    best, last = _weights(checkpoints / f"checkpoint-{steps_per_epoch}"), _weights(checkpoints / "checkpoint-6")
    assert saved.keys() == best.keys() and all(torch.equal(saved[k], best[k]) for k in saved)
    assert not all(torch.equal(saved[k], last[k]) for k in saved)  # the last update was not kept
    translator = CausalTranslator.load(tmp_path / "student", "auto", "en", "hu")
    assert translator.translate([s for s, _ in SHORT], num_beams=2) == [t for _, t in SHORT]
    lines = [r.getMessage() for r in caplog.records if "| dev BLEU" in r.getMessage()]
    assert len(lines) == 3 and lines[0].startswith("causal-student step 2/16 ") and "dev BLEU 100.00" in lines[0]


def test_a_causal_students_dev_sentences_are_cut_to_max_eval_tokens(plain_dir):
    from distilmt.training.loop import causal_dev_pairs

    _, tokenizer = load_causal(plain_dir)
    long = " ".join(["And God said unto Moses."] * 20)
    pairs, cut = causal_dev_pairs([*SHORT, (long, "Ámen."), ("Amen.", long)], tokenizer, 16)  # SHORT: <= 15
    assert cut == 2 and pairs[:4] == SHORT
    assert all(len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= 16 for pair in pairs for text in pair)
    assert pairs[4][0] and long.startswith(pairs[4][0]) and pairs[4][1] == "Ámen."
    assert pairs[5][0] == "Amen." and pairs[5][1] and long.startswith(pairs[5][1])
    assert causal_dev_pairs([], tokenizer, 16) == ([], 0)


# -- generation --------------------------------------------------------------------------------------------
def test_generation_stops_at_eos_and_returns_only_the_translation(trained_dir):
    translator = CausalTranslator.load(trained_dir, "auto", "en", "hu")
    sources, targets = [s for s, _ in SHORT], [t for _, t in SHORT]
    assert translator.translate(sources, num_beams=1, max_new_tokens=60) == targets  # batched, left-padded
    assert [translator.translate([s], num_beams=2)[0] for s in sources] == targets  # one at a time, beams
    scored = translator.translate_scored(sources, SeqKDConfig(num_beams=2, max_new_tokens=60, batch_tokens=100))
    assert [hyps[0][0] for hyps in scored] == targets and all(-1 < hyps[0][1] <= 0 for hyps in scored)
    # the raw continuation ends at eos well before max_new_tokens: the model stopped itself
    prompt = translator.prompt
    ids = torch.tensor([prompt.prompt_ids(sources[0])])
    out = translator.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=60,
                                    eos_token_id=prompt.eos_token_id, pad_token_id=prompt.pad_token_id)
    continuation = out[0, ids.shape[1]:].tolist()
    assert continuation[-1] == prompt.eos_token_id and len(continuation) < 60
    assert prompt.target_ids(targets[0]) == continuation


def write_tsv(pairs, path: Path) -> Path:
    path.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    return path


# -- sequence-level KD: a causal teacher labels a seq2seq student ---------------------------------------------
def test_a_causal_teacher_writes_labels_for_a_seq2seq_student(tmp_path, trained_dir, verse_pairs, monkeypatch,
                                                             capsys):
    """... and `distilmt evaluate` gives the causal teacher its row: the test set is the pairs it memorised."""
    import sacrebleu

    from distilmt.cli import main
    from distilmt.data.corpus import load_splits
    from distilmt.models.loading import load_seq2seq
    from distilmt.models.translators import open_model
    from distilmt.rundir import load_tokenizer
    from distilmt.teachers.labels import read_distilled
    from helpers import TINY

    monkeypatch.setenv("DISTILMT_CACHE", str(tmp_path / "cache"))
    config = json.loads(json.dumps(TINY))
    config["data"].update(max_train_pairs=24, corpus=str(write_tsv(verse_pairs[:200], tmp_path / "train.tsv")),
                          dev_file=str(write_tsv(verse_pairs[200:208], tmp_path / "dev.tsv")),
                          test_file=str(write_tsv(SHORT, tmp_path / "test.tsv")))
    config["teacher"].update(kind="causal", path=str(trained_dir))
    config["seqkd"] = {"enabled": True, "num_beams": 2, "max_new_tokens": 24, "shard_size": 10, "batch_tokens": 300}
    config["student_train"].update(max_steps=3, eval_every_epoch=False)
    config["eval"].update(export_ct2=True, speed_sentences=2, semantic=False, max_new_tokens=40)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "run"
    assert main(["train-teacher", "--config", str(tmp_path / "c.yaml"), "--run-dir", str(run_dir)]) == 0
    assert main(["generate-labels", "--run-dir", str(run_dir)]) == 0

    sources = [s for s, _ in load_splits(run_dir / "data").train]
    pairs = read_distilled(run_dir / "distilled")
    stats = json.loads((run_dir / "distilled" / "stats.json").read_text())
    assert stats["sources"] == len(sources) and len(list((run_dir / "distilled").glob("shard-*.tsv"))) == 3
    translator = CausalTranslator.load(run_dir / "teacher", "auto", "en", "hu")
    expected = translator.translate_scored(sources, SeqKDConfig(num_beams=2, max_new_tokens=24, batch_tokens=300))
    kept = [(s, hyps[0][0]) for s, hyps in zip(sources, expected) if hyps[0][0].strip()]
    assert pairs == kept and stats["mean_score"] <= 0
    assert all("<|im" not in label and "assistant" not in label for _, label in pairs)  # the continuation only

    run_tokenizer = load_tokenizer(run_dir)  # trained here for the seq2seq student, not the teacher's BPE
    assert len(run_tokenizer) != len(translator.tokenizer)
    assert main(["generate-labels", "--run-dir", str(run_dir)]) == 0  # complete: skipped, same corpus
    assert read_distilled(run_dir / "distilled") == pairs

    # the seq2seq students: the baseline on the references, student-seqkd on the causal teacher's labels
    assert main(["distill", "--run-dir", str(run_dir)]) == 0
    assert main(["evaluate", "--run-dir", str(run_dir)]) == 0
    rows = {r["name"]: r for r in json.loads((run_dir / "metrics.json").read_text())["models"]}
    assert set(rows) == {"teacher", "student-baseline", "student-seqkd"}  # no token-level KD across vocabularies
    assert load_seq2seq(run_dir / "student-seqkd")[0].config.is_encoder_decoder

    # the teacher's row: prompted as its prompt.json says (the run's prompt.template and languages)
    assert json.loads((run_dir / "teacher" / "prompt.json").read_text()) == \
        {"template": "auto", "src_lang": "en", "tgt_lang": "hu"}
    targets = [t for _, t in SHORT]
    hyps = json.loads((run_dir / "translations.json").read_text())["hypotheses"]
    assert hyps["teacher"] == targets  # it memorised them, and stopped at its eos
    teacher = rows["teacher"]
    assert teacher["engine"] == "hf-causal" and not teacher["collapsed"]
    assert teacher["bleu"] == pytest.approx(sacrebleu.corpus_bleu(targets, [targets]).score) == pytest.approx(100)
    assert teacher["chrf"] == pytest.approx(100) and teacher["bleu"] > rows["student-baseline"]["bleu"]
    assert teacher["params"] == sum(p.numel() for p in translator.model.parameters())
    assert teacher["size_mb"] > 0 and teacher["sentences_per_s"] > 0 and teacher["latency_bs1_ms"] > 0
    assert rows["student-seqkd"]["compression"] == pytest.approx(teacher["params"] / rows["student-seqkd"]["params"])
    assert open_model(run_dir / "teacher").translate(["Amen."], num_beams=1, max_new_tokens=40) == ["Ámen."]

    capsys.readouterr()  # `distilmt translate` opens it the same way; `distilmt export` refuses it in one line
    assert main(["translate", "teacher", "--run-dir", str(run_dir), "--text", "Jesus wept.", "--beams", "1"]) == 0
    assert capsys.readouterr().out.strip() == "Jézus sírt."
    assert main(["export", str(run_dir / "teacher"), str(tmp_path / "ct2")]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "causal LM" in error and "seq2seq models only" in error
    assert not (tmp_path / "ct2").exists()


def test_distill_trains_causal_students_with_token_kd_from_a_causal_teacher(tmp_path, teacher_dir, texts,
                                                                          monkeypatch, capsys):
    from distilmt.cli import main
    from helpers import TINY

    monkeypatch.setenv("DISTILMT_CACHE", str(tmp_path / "cache"))
    _, tokenizer = load_causal(teacher_dir)
    student_dir = save(qwen2(tokenizer, seed=7, pad_to=128), tokenizer, tmp_path / "student")
    other = byte_bpe(texts[::2], 350, chat=True)
    other_dir = save(qwen2(other, seed=8), other, tmp_path / "other")
    config = json.loads(json.dumps(TINY))
    config["data"].update(max_train_pairs=24, max_tokens=64)  # byte-level tokens: verses are long
    config["teacher"].update(kind="causal", path=str(teacher_dir))
    config["student"] = {"kind": "causal", "path": str(student_dir)}
    config["student_train"].update(max_steps=3, weight_decay=0.0)
    config["eval"].update(speed_sentences=0, semantic=False, max_new_tokens=8)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "run"
    assert main(["train-teacher", "--config", str(tmp_path / "c.yaml"), "--run-dir", str(run_dir)]) == 0
    assert main(["distill", "--run-dir", str(run_dir)]) == 0
    for name in ("student-baseline", "student-kd"):
        model, _ = load_causal(run_dir / name)
        assert model.get_output_embeddings().weight.shape[0] == 512  # the student's own padding, kept
    log = (run_dir / "run.log").read_text(encoding="utf-8")
    assert "student-kd step 3/3" in log and " kd " in log
    # the monitor watched both causal students against the causal teacher (one tokenizer: with the KL)
    for name in ("student-baseline", "student-kd"):
        seen = json.loads((run_dir / "monitor" / f"{name}.json").read_text())
        assert seen["history"] and all(r["kl"] is not None and r["kl"] >= 0 for r in seen["history"])
        assert all(isinstance(r["student"], str) and isinstance(r["teacher"], str) for r in seen["history"])
    assert re.search(r"student-kd step 3/3 ep [\d.]+ \| dev BLEU [\d.]+ chrF", log)  # on the run's dev pairs

    # every causal model of the run gets a metrics row, prompted as its prompt.json says (no CT2 export of them)
    assert main(["evaluate", "--run-dir", str(run_dir)]) == 0
    rows = {r["name"]: r for r in json.loads((run_dir / "metrics.json").read_text())["models"]}
    assert set(rows) == {"teacher", "student-baseline", "student-kd"}
    for name, row in rows.items():
        assert json.loads((run_dir / name / "prompt.json").read_text())["template"] == "auto"
        assert row["engine"] == "hf-causal" and row["bleu"] >= 0 and row["chrf"] >= 0 and row["size_mb"] > 0
        assert row["params"] == sum(p.numel() for p in load_causal(run_dir / name)[0].parameters())
    assert rows["student-kd"]["compression"] == pytest.approx(rows["teacher"]["params"] / rows["student-kd"]["params"])
    assert not (run_dir / "export").exists()

    config["student"]["path"] = str(other_dir)  # another tokenizer: refused before any training, one line
    (tmp_path / "c2.yaml").write_text(yaml.safe_dump(config))
    capsys.readouterr()
    assert main(["train-teacher", "--config", str(tmp_path / "c2.yaml"), "--run-dir", str(tmp_path / "run2")]) == 0
    assert main(["distill", "--only", "kd", "--run-dir", str(tmp_path / "run2")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "needs one vocabulary" in error and "sequence-level KD" in error
    assert str(teacher_dir) in error and str(other_dir) in error
    assert not (tmp_path / "run2" / "student-kd" / "config.json").exists()


def test_the_monitor_prompts_causal_models_and_takes_the_kl_on_the_target_tokens(teacher_dir):
    from distilmt.config import MonitorConfig
    from distilmt.models.generation import generate_continuations
    from distilmt.monitor import DistillationMonitor
    from distilmt.monitor.scores import causal_batch_kl

    teacher, tokenizer = load_causal(teacher_dir)
    student = qwen2(tokenizer, seed=5, pad_to=128)  # other weights, another padding of the same vocabulary
    prompt = TranslationPrompt(tokenizer, "auto", "en", "hu")
    sources, targets = [s for s, _ in SHORT], [t for _, t in SHORT]
    vocab = len(tokenizer)
    same, _ = causal_batch_kl(teacher, teacher, prompt, sources, targets, vocab)
    assert same == pytest.approx([0.0] * len(SHORT), abs=1e-6)
    kls, width = causal_batch_kl(teacher, student, prompt, sources, targets, vocab)
    assert width == vocab
    # by hand for the first pair: the logits that predict its target tokens and eos, nothing of the prompt
    example = prompt.example(sources[0], targets[0])
    ids = torch.tensor([example["input_ids"]])
    with torch.no_grad():
        t_logits, s_logits = (m(input_ids=ids).logits[0, :-1, :vocab] for m in (teacher, student))
    predicts_target = torch.tensor(example["labels"][1:]) != IGNORE_INDEX
    p = torch.softmax(t_logits[predicts_target], -1)
    by_hand = (p * (p.log() - torch.log_softmax(s_logits[predicts_target], -1))).sum(-1).mean()
    assert kls[0] == pytest.approx(float(by_hand), rel=1e-4) and kls[0] > 0

    monitor = DistillationMonitor(teacher, tokenizer, SHORT[:2], MonitorConfig(num_samples=2, quiet=True),
                                  teacher_prompt=prompt, student_prompt=prompt, shared_vocab=vocab,
                                  stream=io.StringIO())
    records = monitor.observe(student, step=1)
    greedy = [h[0][0] for h in generate_continuations(student, prompt, sources[:2], max_new_tokens=monitor._student_cap,
                                                         num_beams=1, do_sample=False)]
    assert [r["student"] for r in records] == greedy  # the student's own prompted translations
    assert [r["kl"] for r in records] == pytest.approx(
        causal_batch_kl(teacher, student, prompt, sources[:2], monitor.teacher_translations, vocab)[0])
    # two tokenizers (shared_vocab 0): translations compared as text, no KL, no crash
    text_only = DistillationMonitor(teacher, tokenizer, SHORT[:2], MonitorConfig(num_samples=2, quiet=True),
                                    teacher_prompt=prompt, student_prompt=prompt, stream=io.StringIO())
    assert all(r["kl"] is None and 0 <= r["laziness"] <= 1 for r in text_only.observe(student, step=1))


def test_a_causal_teacher_given_as_seq2seq_is_refused_with_the_fix(tmp_path, teacher_dir, monkeypatch, capsys):
    from distilmt.cli import main
    from helpers import TINY

    monkeypatch.setenv("DISTILMT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(TINY))
    capsys.readouterr()
    assert main(["train-teacher", "--config", str(tmp_path / "c.yaml"), "--teacher", str(teacher_dir),
                 "--run-dir", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and str(teacher_dir) in error and "'qwen2' is a causal LM" in error
    assert "--set teacher.kind=causal" in error
    assert not (tmp_path / "run" / "teacher").exists()


def test_cache_teacher_refuses_a_causal_teacher_in_one_line(tmp_path, teacher_dir, monkeypatch, capsys):
    """Not the loader's "add --set teacher.kind=causal" (it is set): the cache is for seq2seq teachers."""
    from distilmt.cli import main
    from helpers import TINY

    monkeypatch.setenv("DISTILMT_CACHE", str(tmp_path / "cache"))
    config = json.loads(json.dumps(TINY))
    config["data"].update(max_train_pairs=24, max_tokens=64)
    config["teacher"].update(kind="causal", path=str(teacher_dir))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "run"
    assert main(["train-teacher", "--config", str(tmp_path / "c.yaml"), "--run-dir", str(run_dir)]) == 0
    capsys.readouterr()
    assert main(["cache-teacher", "--run-dir", str(run_dir)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "a causal-LM teacher (teacher.kind=causal) is not cached" in error
    assert "add --set teacher.kind=causal" not in error and not (run_dir / "teacher-cache").exists()


def test_config_keys_of_causal_models_are_validated_by_name():
    from distilmt.config import ConfigError, load_config

    cfg = load_config("quick", overrides=["teacher.kind=causal", "teacher.path=/models/qwen",
                                          "prompt.template='{src_lang}: {source} => {tgt_lang}:'"])
    assert cfg.teacher.kind == "causal" and cfg.prompt.template.endswith("{tgt_lang}:")
    for override, key in (("teacher.kind=causal", "teacher.path"), ("teacher.kind=decoder", "teacher.kind"),
                          ("student.kind=causal", "student.path"), ("prompt.template='Translate: {text}'",
                                                                     "prompt.template"),
                          ("prompt.template=Translate please", "prompt.template")):
        with pytest.raises(ConfigError) as error:
            load_config("quick", overrides=[override])
        assert str(error.value).startswith(f"{key}:") and "\n" not in str(error.value)
