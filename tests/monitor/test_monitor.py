"""The visual distillation monitor: scores against hand-computed values, and a tiny real distillation
(a Seq2SeqTrainer run with the monitor as a callback) checked in terminal and plain-text modes."""

from __future__ import annotations

import io
import json
import math
import re

import pytest
import torch

from distilmt.config import MonitorConfig
from distilmt.monitor import DistillationMonitor
from distilmt.monitor.messages import advice_key, band, comment
from distilmt.monitor.render import plain_diff, shorten, shown, word_diff
from distilmt.monitor.scores import (
    collapse_suspected,
    degenerate,
    laziness,
    normalised_kl,
    output_problem,
    repetition,
    sample_kl,
    text_similarity,
    trend_of,
)
from distilmt.monitor.topics import BUILTIN_TOPICS, classify_topic, merge_topics

# Sentences written for these tests (Bible-like, English / Hungarian), not taken from any corpus.
PAIRS = [
    ("The king went to war with his army.", "A király háborúba ment a seregével."),
    ("She prayed in the temple every day.", "Minden nap imádkozott a templomban."),
    ("The priest offered a lamb on the altar.", "A pap egy bárányt áldozott az oltáron."),
    ("His son was born in the city.", "A fia a városban született."),
    ("They sailed across the sea in a ship.", "Hajóval átkeltek a tengeren."),
    ("The shepherd watched his flock in the field.", "A pásztor a mezőn őrizte a nyáját."),
    ("He taught his disciples a parable.", "Egy példázatot tanított a tanítványainak."),
    ("The prophet saw a vision at night.", "A próféta éjjel látomást látott."),
    ("The king sat on his throne.", "A király a trónján ült."),
    ("Her daughter married a good man.", "A lánya egy jó emberhez ment feleségül."),
    ("They sang a song of praise.", "Dicsérő éneket énekeltek."),
    ("The farmer sowed seed in spring.", "A földműves tavasszal magot vetett."),
    ("The army fought a great battle.", "A sereg nagy csatát vívott."),
    ("Keep the law and the commandments.", "Tartsd meg a törvényt és a parancsolatokat."),
    ("They went on a long journey.", "Hosszú útra indultak."),
    ("The tree gave good fruit.", "A fa jó gyümölcsöt termett."),
]
DEV = [
    ("The king and his army went to war.", "A király és a serege háborúba ment."),
    ("The shepherd found his sheep in the field.", "A pásztor megtalálta a juhát a mezőn."),
]
ANSI_CODE = re.compile(r"\x1b\[[0-9;]*m")


# ----------------------------------------------------------------------------------------------------
# pure functions, hand-computed
# ----------------------------------------------------------------------------------------------------


def test_text_similarity_hand_values():
    assert text_similarity("abcd", "abce") == pytest.approx(2 * 3 / 8)  # 3 matching chars of 4 + 4
    assert text_similarity("same words", "same words") == 1.0
    assert text_similarity("", "") == 1.0
    assert text_similarity("abc", "") == 0.0
    assert text_similarity("abc", "xyz") == 0.0
    long_a, long_b = "a e " * 80, "a e " * 79 + "a x "  # > 200 chars: autojunk must not distort it
    assert text_similarity(long_a, long_b) == pytest.approx(2 * 319 / 640)


def test_normalised_kl_is_kl_over_log_vocab_clipped():
    assert normalised_kl(0.0, 1000) == 0.0
    assert normalised_kl(math.log(1000) / 2, 1000) == pytest.approx(0.5)
    assert normalised_kl(3.0, 100) == pytest.approx(3.0 / math.log(100))
    assert normalised_kl(50.0, 100) == 1.0
    assert normalised_kl(-1e-7, 100) == 0.0
    assert normalised_kl(float("nan"), 100) == 1.0
    with pytest.raises(ValueError):
        normalised_kl(1.0, 1)


def test_laziness_formula_hand_values():
    assert laziness(1.0, 0.0) == 0.0
    assert laziness(0.0, 1.0) == pytest.approx(1.0)
    assert laziness(0.75, 0.5) == pytest.approx(0.6 * 0.25 + 0.4 * 0.5)  # 0.35
    assert laziness(0.5, 0.25) == pytest.approx(0.4)
    assert laziness(0.2, None) == pytest.approx(0.8)  # no shared vocabulary: text term alone
    # end to end: similarity of "abcd"/"abce" is 0.75, KL of log(16)/4 nats over 16 tokens is 0.25
    value = laziness(text_similarity("abcd", "abce"), normalised_kl(math.log(16) / 4, 16))
    assert value == pytest.approx(0.6 * 0.25 + 0.4 * 0.25)


@pytest.mark.parametrize("value, colour", [(0.0, "green"), (0.299, "green"), (0.3, "yellow"), (0.599, "yellow"),
                                           (0.6, "red"), (1.0, "red")])
def test_band_boundaries(value, colour):
    assert band(value)[0] == colour
    assert band(value, "zh")[0] == colour


def test_band_labels():
    assert band(0.1) == ("green", "learning well")
    assert band(0.9) == ("red", "lazy")
    assert band(0.9, "zh") == ("red", "偷懒")


def test_comments_english_and_chinese():
    assert comment(0.05, 2.0, "en") == "excellent — has mastered the teacher"
    assert comment(0.2, 2.0, "en") == "good, most knowledge absorbed"
    assert comment(0.4, 0.5, "en") == "not fluent on this topic yet"
    assert comment(0.4, 3.0, "en") == "still learning — keep training"
    assert comment(0.8, None, "en") == "lazy — needs more work"
    assert "same output" in comment(0.8, 0.3, "en")  # lazy while the loss is low: collapse warning
    assert "diverged" in comment(0.1, float("nan"), "en")
    zh = [comment(v, loss, "zh") for v, loss in ((0.05, 2.0), (0.2, 2.0), (0.4, 0.5), (0.4, 3.0), (0.8, None),
                                                 (0.8, 0.3))]
    assert zh[0] == "优秀——已经掌握了老师的本领"
    assert zh[4] == "偷懒——还需要更多训练"
    assert len(set(zh)) == 6
    assert all(re.search(r"[\u4e00-\u9fff]", text) for text in zh)
    with pytest.raises(ValueError):
        comment(0.5, 1.0, "fr")


def test_classify_topic_english_hungarian_and_user_topics():
    assert classify_topic("The king went to war with his army.") == "war & kings"
    assert classify_topic("A király háborúba ment a seregével.") == "war & kings"
    assert classify_topic("She prayed and praised God in the temple.") == "worship & prayer"
    assert classify_topic("Imádkozott és énekelt a templomban.") == "worship & prayer"
    assert classify_topic("The priest offered a burnt offering on the altar.") == "law & sacrifice"
    assert classify_topic("A pap égőáldozatot mutatott be az oltáron.") == "law & sacrifice"
    assert classify_topic("Abraham became the father of Isaac, his firstborn son.") == "family & genealogy"
    assert classify_topic("He taught the disciples in parables.") == "teaching & parables"
    assert classify_topic("The shepherd led his flock to the field.") == "nature & farming"
    assert classify_topic("Xyz qwv.") == "other"
    topics = merge_topics({"fishing": ["fish", "net", "háló", "halat"]})
    assert list(topics)[0] == "fishing" and set(BUILTIN_TOPICS) <= set(topics)
    assert classify_topic("They cast the net and caught many fish.", topics) == "fishing"
    assert classify_topic("Kivetették a hálót, és sok halat fogtak.", topics) == "fishing"
    assert classify_topic("They cast the net.", merge_topics({"war & kings": ["net"]})) == "war & kings"


def test_word_diff_and_shorten():
    assert word_diff("the king sat", "the great king sat") == [("equal", "the"), ("insert", "great"),
                                                             ("equal", "king sat")]
    assert plain_diff("a b c", "a x c") == "a [-b-] {+x+} c"
    assert shorten("one  two\nthree", 40) == "one two three"
    assert shorten("abcdefghijklmnop", 10) == "abcdefghi…" and len(shorten("abcdefghijklmnop", 10)) == 10
    assert shown("  ", 10) == "(empty)" and shown("ab", 10) == "ab"


def test_collapse_trend_and_advice():
    assert collapse_suspected(["the the", "the the"], ["A király ült.", "A pásztor jött."])
    assert collapse_suspected(["the the the the the the", "a a a a a a"],
                              ["one two three four", "five six seven eight"])
    assert collapse_suspected(["", ""], ["a b", "c d"])
    assert collapse_suspected(["eee ee eee", "eee eee eee"], ["A király ült.", "A pásztor jött."])  # near-same
    assert collapse_suspected(["the king the king the king the king"], ["A király ül."])  # one sample looping
    # a genealogy repeats more than half its words (the old measure called it looping) but few of its trigrams
    genealogy = ("the sons of Rob were Tom and Sam, and the sons of Tom were Ben and Max, and the sons of Sam were "
                 "Jon and Lee, and the sons of Jon were Ned and Abe.")
    words = genealogy.split()
    assert 1 - len(set(words)) / len(words) > 0.5 and repetition(genealogy) == pytest.approx(1 - 28 / 33)
    assert output_problem(genealogy) is None
    assert not collapse_suspected([genealogy, "Tom sat down."], ["the sons of Rob were Tom.", "Tom sat."])
    assert not collapse_suspected(["A király ült.", "A pásztor."], ["A király ült.", "A pásztor jött."])
    assert not collapse_suspected(["A király ült.", "A király ült."], ["A király ül.", "A király ül."])
    assert trend_of(0.6, 0.4) == "improving" and trend_of(0.4, 0.42) == "flat" and trend_of(0.3, 0.5) == "worse"
    assert trend_of(None, 0.4) == "unknown"
    assert advice_key(0, None, "unknown", False) == "none"
    assert advice_key(10, 0.2, "improving", True) == "collapsed"
    assert advice_key(10, 0.2, "flat", False) == "well"
    assert advice_key(10, 0.45, "improving", False) == "improving"
    assert advice_key(10, 0.45, "flat", False) == "plateau"
    assert advice_key(10, 0.8, "worse", False) == "far_worse"



def test_a_collapsed_student_is_never_praised():
    """Case 11 of the reliability issue: looping or empty outputs that imitate an equally bad teacher perfectly."""
    looping = ["and the and the and the and the", "and the and the and the and"]
    assert collapse_suspected(looping, looping)  # degenerate by itself, whatever the teacher writes
    assert collapse_suspected(["", ""], ["", ""])
    assert degenerate(["A király ült.", "A király ült.", "A király ült."])  # one text for every input
    assert not degenerate(["A király ült.", "A pásztor jött."])
    assert output_problem("") == "empty" and output_problem("and the and the and the and the") == "looping"
    assert output_problem("A király ült a trónján.") is None
    # laziness 0 (perfect imitation) but the output loops / is empty: collapsed, not "excellent"
    assert comment(0.0, 0.5, problem="looping") == "collapsed — the student repeats itself here"
    assert comment(0.0, 0.5, problem="empty") == "collapsed — the student writes nothing here"
    assert comment(0.0, 0.5, "zh", problem="empty") == "已坍缩——学生在这里什么也没写"
    assert comment(0.0, 0.5, reference_similarity=0.02) == "imitates the teacher, but both are far from the reference"
    assert comment(0.0, 0.5, reference_similarity=0.6) == "excellent — has mastered the teacher"
    assert advice_key(10, 0.05, "flat", False, far_from_reference=True) == "off_reference"


# ----------------------------------------------------------------------------------------------------
# tiny models
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine they lose 10x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from distilmt.data.tokenizer import train_tokenizer

    texts = [t for pair in PAIRS + DEV for t in pair]
    return train_tokenizer(texts * 3, 160, tmp_path_factory.mktemp("tok"))


def _model(tokenizer, d_model: int, seed: int):
    from transformers import M2M100Config, M2M100ForConditionalGeneration

    torch.manual_seed(seed)
    config = M2M100Config(
        vocab_size=len(tokenizer), d_model=d_model, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=2 * d_model,
        decoder_ffn_dim=2 * d_model, max_position_embeddings=128, dropout=0.0, scale_embedding=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id, decoder_start_token_id=tokenizer.eos_token_id,
        forced_eos_token_id=None,
    )
    return M2M100ForConditionalGeneration(config)


def _features(tokenizer, pairs):
    return [dict(tokenizer(s, text_target=t)) for s, t in pairs]


def _fit(model, tokenizer, pairs, steps: int, lr: float = 1e-2):
    """A few full-batch AdamW steps (a plain loop: these are fixtures, not the thing under test)."""
    from transformers import DataCollatorForSeq2Seq

    batch = DataCollatorForSeq2Seq(tokenizer, model=model)(_features(tokenizer, pairs))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    return model


@pytest.fixture(scope="module")
def teacher(tokenizer):
    """A 32-wide teacher fitted for a few dozen steps, so its translations are real words."""
    model = _fit(_model(tokenizer, 32, seed=0), tokenizer, PAIRS + DEV, steps=60)
    model.eval()
    model.requires_grad_(False)
    return model


@pytest.fixture(scope="module")
def student_start(tokenizer):
    """A 16-wide student after a few steps: it already prints (degenerate) words, never an empty line."""
    return _fit(_model(tokenizer, 16, seed=1), tokenizer, PAIRS, steps=10).state_dict()


def _train_with_monitor(tokenizer, teacher, start, tmp_path, config, console=None, stream=None, log_dir=None):
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

    student = _model(tokenizer, 16, seed=1)
    student.load_state_dict(start)
    monitor = DistillationMonitor(teacher, tokenizer, DEV, config, log_dir=log_dir, console=console, stream=stream)
    args = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_train_epochs=2, learning_rate=1e-3,
        logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, seed=0,
    )
    trainer = Seq2SeqTrainer(model=student, args=args, train_dataset=_features(tokenizer, PAIRS[:8]),
                             data_collator=DataCollatorForSeq2Seq(tokenizer, model=student),
                             processing_class=tokenizer, callbacks=[monitor])
    trainer.train()
    return monitor, student


def test_sample_kl_matches_hand_computation(tokenizer, teacher):
    student = _model(tokenizer, 16, seed=3)
    source, target = DEV[0]
    assert sample_kl(teacher, teacher, tokenizer, source, target) == pytest.approx(0.0, abs=1e-6)
    value = sample_kl(teacher, student, tokenizer, source, target)
    labels = torch.tensor([tokenizer(text_target=target)["input_ids"]])
    decoder_in = torch.cat([torch.tensor([[tokenizer.eos_token_id]]), labels[:, :-1]], dim=1)
    enc = tokenizer([source], return_tensors="pt")
    with torch.no_grad():
        log_p = torch.log_softmax(teacher(**enc, decoder_input_ids=decoder_in).logits, -1)
        log_q = torch.log_softmax(student(**enc, decoder_input_ids=decoder_in).logits, -1)
    expected = torch.nn.functional.kl_div(log_q[0], log_p[0], log_target=True, reduction="sum") / labels.shape[1]
    assert value == pytest.approx(float(expected), rel=1e-4)
    assert student.training  # a freshly built model is in train mode; sample_kl restored it


def _check_common(monitor, steps: int):
    history = monitor.history
    assert len(history) == steps * len(DEV)
    assert all(0.0 <= r["laziness"] <= 1.0 for r in history)
    assert all(r["colour"] == band(r["laziness"])[0] for r in history)
    assert all(0.0 <= r["kl_norm"] <= 1.0 and r["kl"] >= 0 for r in history)
    assert all(r["teacher"] for r in history), "the fitted teacher should translate every sample"
    assert all(r["student"].strip() for r in history), "the pre-fitted student should print words"
    assert [r["topic"] for r in history[:2]] == ["war & kings", "nature & farming"]
    assert len(monitor.epoch_summaries) == 2
    for summary in monitor.epoch_summaries:
        assert sum(summary["topics"].values()) == summary["samples_shown"]
        assert summary["mean_loss"] is not None
    final = monitor.final_summary
    assert final["samples_shown"] == len(history)
    assert sum(final["topics"].values()) == final["samples_shown"]
    assert final["trend"] in ("improving", "flat", "worse")
    assert 0.0 <= final["overall_laziness"] <= 1.0
    stats = monitor.stats()
    assert stats["samples_shown"] == len(history) and len(stats["laziness_by_step"]) == steps
    assert len(monitor.sample_history(1)) == steps


def test_monitor_terminal_panels(tokenizer, teacher, student_start, tmp_path):
    from rich.console import Console

    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    config = MonitorConfig(sample_frequency=1, num_samples=2, show_diff=True, max_text_length=60)
    monitor, student = _train_with_monitor(tokenizer, teacher, student_start, tmp_path, config, console=console)
    assert student.training, "the monitor must hand the student back in train mode"
    _check_common(monitor, steps=4)
    raw = console.file.getvalue()
    text = ANSI_CODE.sub("", raw)
    assert text.count("Distillation monitor · step") == 4
    assert "epoch 1 summary" in text and "epoch 2 summary" in text and "Distillation monitor · final" in text
    for r in monitor.history:
        assert shown(r["teacher"], 60) in text
        assert shown(r["student"], 60) in text
        assert shown(r["source"], 60) in text and shown(r["reference"], 60) in text
        assert r["comment"] in text
        assert f"{r['laziness']:4.0%}" in text
    # every bar label is drawn in the colour of its value's band (green 32, yellow 33, red 31), in order:
    # panels of steps 1-2, epoch 1 box, panels of steps 3-4, epoch 2 box, final box
    codes = {"32": "green", "33": "yellow", "31": "red"}
    drawn = [codes[c] for c in re.findall(r"\x1b\[(3[123])m(?:learning well|getting there|lazy)\x1b", raw)]
    colours = [r["colour"] for r in monitor.history]
    epochs = [band(s["mean_laziness"])[0] for s in monitor.epoch_summaries]
    final = band(monitor.final_summary["overall_laziness"])[0]
    assert drawn == colours[:4] + epochs[:1] + colours[4:] + epochs[1:] + [final]
    assert "[monitor]" not in text  # no plain lines on a terminal


def test_monitor_plain_lines_and_tensorboard(tokenizer, teacher, student_start, tmp_path):
    from rich.console import Console
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    console = Console(file=io.StringIO(), width=120)  # not a terminal
    stream = io.StringIO()
    config = MonitorConfig(sample_frequency=2, num_samples=2, show_diff=True)
    monitor, _ = _train_with_monitor(tokenizer, teacher, student_start, tmp_path, config, console=console,
                                     stream=stream, log_dir=str(tmp_path / "tb"))
    _check_common(monitor, steps=2)
    assert console.file.getvalue() == ""
    lines = stream.getvalue().splitlines()
    sample_lines = [line for line in lines if line.startswith("[monitor] step=")]
    assert len(sample_lines) == len(monitor.history)
    for line, r in zip(sample_lines, monitor.history):
        assert f"teacher: {shown(r['teacher'], 160)} |" in line
        assert f"student: {shown(r['student'], 160)} |" in line
        assert f"laziness={r['laziness']:.3f} band={band(r['laziness'])[0]}" in line
        assert "diff: " in line and "\x1b" not in line
    assert sum(line.startswith("[monitor] epoch ") for line in lines) == 2
    assert lines[-1].startswith("[monitor] final: samples_shown=4")
    monitor.save(tmp_path / "monitor.json")  # what a report reads back
    saved = json.loads((tmp_path / "monitor.json").read_text(encoding="utf-8"))
    assert len(saved["history"]) == 4 and saved["stats"]["samples_shown"] == 4

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert "monitor/laziness" in scalars and "monitor/text_similarity" in scalars
    assert "monitor/kl_normalised" in scalars
    assert [e.step for e in events.Scalars("monitor/laziness")] == [2, 4]
    assert all(0 <= e.value <= 1 for e in events.Scalars("monitor/laziness"))


def test_student_equal_to_teacher_is_green(tokenizer, teacher):
    from rich.console import Console

    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    monitor = DistillationMonitor(teacher, tokenizer, DEV, MonitorConfig(num_samples=2), console=console)
    records = monitor.observe(teacher, step=7, epoch=0.5, loss=0.9)
    assert [r["laziness"] for r in records] == pytest.approx([0.0, 0.0], abs=1e-6)
    assert all(r["similarity"] == 1.0 and r["colour"] == "green" for r in records)
    assert all(r["comment"] == "excellent — has mastered the teacher" for r in records)
    monitor._show_panel(records)
    raw = console.file.getvalue()
    assert raw.count("\x1b[32mlearning well") == 2 and "\x1b[31m" not in raw


def test_quiet_chinese_and_rank_zero(tokenizer, teacher):
    from rich.console import Console
    from transformers import TrainerControl, TrainerState, TrainingArguments

    student = _model(tokenizer, 16, seed=2)
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    stream = io.StringIO()
    config = MonitorConfig(sample_frequency=5, num_samples=1, language="zh", quiet=True)
    monitor = DistillationMonitor(teacher, tokenizer, DEV, config, console=console, stream=stream)
    assert not monitor.rich_output  # quiet wins over a terminal
    args, control = TrainingArguments(output_dir="unused", report_to=[], use_cpu=True), TrainerControl()
    state = TrainerState(global_step=4, epoch=0.4, is_world_process_zero=True)
    monitor.on_step_end(args, state, control, model=student)
    assert monitor.history == []  # not a multiple of sample_frequency
    state.global_step, state.log_history = 5, [{"loss": 4.0, "step": 5}]
    state.is_world_process_zero = False
    monitor.on_step_end(args, state, control, model=student)
    assert len(monitor.history) == 1 and stream.getvalue() == ""  # measured, but only rank zero prints
    assert student.training and not teacher.training  # both models handed back in their own modes
    state.global_step, state.is_world_process_zero = 10, True
    monitor.on_step_end(args, state, control, model=student)
    line = stream.getvalue().strip()
    assert line.startswith("[monitor] step=10") and re.search(r"comment: .*[\u4e00-\u9fff]", line)
    assert monitor.history[-1]["comment"] in line
    monitor.on_train_end(args, state, control)
    assert monitor.final_summary["samples_shown"] == 2
    assert re.search(r"[\u4e00-\u9fff]", monitor.final_summary["advice"])
    assert console.file.getvalue() == ""


def test_disabled_monitor_does_nothing(tokenizer, teacher):
    from transformers import TrainerControl, TrainerState, TrainingArguments

    stream = io.StringIO()
    monitor = DistillationMonitor(teacher, tokenizer, DEV, MonitorConfig(enabled=False, sample_frequency=1),
                                  stream=stream)
    state = TrainerState(global_step=1, epoch=0.1)
    args = TrainingArguments(output_dir="unused", report_to=[], use_cpu=True)
    monitor.on_train_begin(args, state, TrainerControl())
    monitor.on_step_end(args, state, TrainerControl(), model=_model(tokenizer, 16, seed=1))
    monitor.on_train_end(args, state, TrainerControl())
    assert monitor.history == [] and stream.getvalue() == "" and monitor._teacher_texts is None


def test_kl_of_a_pair_longer_than_the_position_table_is_cut_not_a_crash(tokenizer):
    """A Marian model has a fixed position table: the monitor's KL reads at most what both models' tables hold."""
    from transformers import MarianConfig, MarianMTModel

    torch.manual_seed(0)
    marian = MarianMTModel(MarianConfig(
        vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id))
    long_source, long_target = " ".join(s for s, _ in DEV) * 4, " ".join(t for _, t in DEV) * 4
    assert len(tokenizer(long_source)["input_ids"]) > 32 and len(tokenizer(text_target=long_target)["input_ids"]) > 32
    value = sample_kl(marian, _model(tokenizer, 16, seed=3), tokenizer, long_source, long_target)
    assert math.isfinite(value) and value > 0
