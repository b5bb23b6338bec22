"""What the monitor says, in English and Chinese: band labels, comments, panel labels, trends, advice."""

from __future__ import annotations

import math

from .scores import GREEN_BELOW, LOW_LOSS, YELLOW_BELOW

_BAND_LABELS = {
    "en": {"green": "learning well", "yellow": "getting there", "red": "lazy"},
    "zh": {"green": "学习良好", "yellow": "正在进步", "red": "偷懒"},
}


def band(value: float, language: str = "en") -> tuple[str, str]:
    """(colour, label) of a laziness value: [0, 0.3) green, [0.3, 0.6) yellow, [0.6, 1] red."""
    colour = "green" if value < GREEN_BELOW else "yellow" if value < YELLOW_BELOW else "red"
    return colour, _BAND_LABELS[_lang(language)][colour]


_COMMENTS = {
    "en": {
        "diverged": "loss is not a number — training diverged",
        "excellent": "excellent — has mastered the teacher",
        "good": "good, most knowledge absorbed",
        "learning": "still learning — keep training",
        "topic": "not fluent on this topic yet",
        "lazy": "lazy — needs more work",
        "collapse": "lazy despite a low loss — check for the same output on every input",
        "empty": "collapsed — the student writes nothing here",
        "looping": "collapsed — the student repeats itself here",
        "off_reference": "imitates the teacher, but both are far from the reference",
    },
    "zh": {
        "diverged": "损失不是数值——训练已发散",
        "excellent": "优秀——已经掌握了老师的本领",
        "good": "良好，大部分知识已经吸收",
        "learning": "仍在学习中——继续训练",
        "topic": "对这个主题还不够流利",
        "lazy": "偷懒——还需要更多训练",
        "empty": "已坍缩——学生在这里什么也没写",
        "looping": "已坍缩——学生在这里不断重复",
        "off_reference": "在模仿老师，但两者都离参考译文很远",
        "collapse": "损失很低却在偷懒——检查是否对每个输入都输出相同内容",
    },
}


def comment(laziness_value: float, loss: float | None, language: str = "en", low_loss: float = LOW_LOSS,
            problem: str | None = None, reference_similarity: float | None = None) -> str:
    """A short comment from the laziness and the current training loss (None when none was logged yet), read
    together with the student's own health: an ``empty`` or ``looping`` output (``problem``) is called collapsed
    whatever the laziness says, and close imitation of the teacher with a text far from the reference
    (``reference_similarity`` < 0.1) is not praised.

    Below 0.15 "excellent", below 0.30 "good". In the yellow band a low loss (< ``low_loss``) means the
    student fits its training data but not this sentence ("not fluent on this topic yet"); a high loss
    means it is still learning. In the red band a low loss is the alarming case: the loss goes down
    while the text stays far from the teacher, the signature of a collapsed student.
    """
    text = _COMMENTS[_lang(language)]
    if loss is not None and not math.isfinite(loss):
        return text["diverged"]
    if problem is not None:
        return text[problem]
    low = loss is not None and loss < low_loss
    if laziness_value < GREEN_BELOW and reference_similarity is not None and reference_similarity < 0.1:
        return text["off_reference"]
    if laziness_value < 0.15:
        return text["excellent"]
    if laziness_value < GREEN_BELOW:
        return text["good"]
    if laziness_value < YELLOW_BELOW:
        return text["topic"] if low else text["learning"]
    return text["collapse"] if low else text["lazy"]


def _lang(language: str) -> str:
    if language not in ("en", "zh"):
        raise ValueError(f"language '{language}' is not en or zh")
    return language


LABELS = {
    "en": {"title": "Distillation monitor", "step": "step", "epoch": "epoch", "loss": "loss", "sample": "sample",
           "topic": "topic", "source": "source", "teacher": "teacher", "student": "student",
           "reference": "reference", "diff": "diff", "laziness": "laziness", "similarity": "similarity",
           "comment": "comment", "summary": "summary", "samples_shown": "samples shown",
           "mean_loss": "mean loss", "mean_laziness": "mean laziness", "topics": "topics",
           "final": "final", "overall": "overall laziness", "first_last": "first → last epoch",
           "trend": "trend", "advice": "advice", "collapsed": "collapse suspected"},
    "zh": {"title": "蒸馏监控", "step": "步数", "epoch": "轮次", "loss": "损失", "sample": "样本",
           "topic": "主题", "source": "原文", "teacher": "教师", "student": "学生", "reference": "参考译文",
           "diff": "差异", "laziness": "偷懒度", "similarity": "相似度", "comment": "评语", "summary": "小结",
           "samples_shown": "展示样本数", "mean_loss": "平均损失", "mean_laziness": "平均偷懒度",
           "topics": "主题分布", "final": "最终总结", "overall": "总体偷懒度", "first_last": "首轮 → 末轮",
           "trend": "趋势", "advice": "建议", "collapsed": "疑似坍缩"},
}

TRENDS = {"en": {"improving": "improving", "flat": "flat", "worse": "worse", "unknown": "unknown (too few panels)"},
          "zh": {"improving": "改善", "flat": "持平", "worse": "变差", "unknown": "未知（面板太少）"}}

ADVICE = {
    "en": {
        "none": "no sample was shown: lower monitor.sample_frequency or train longer",
        "collapsed": "student collapsed: lower the temperature or raise the hard-label weight",
        "well": "distillation worked well, consider a smaller student",
        "off_reference": "the student imitates the teacher, but both are far from the references: train a "
                         "stronger teacher before distilling",
        "improving": "still improving: train for more epochs",
        "plateau": "plateaued half-way: try a larger student, a higher KD weight, "
                   "or initialising the student from the teacher",
        "worse": "getting worse: lower the learning rate and check for overfitting",
        "far_improving": "far from the teacher but improving: train much longer",
        "far_worse": "getting lazier: lower the learning rate and check the temperature and loss weights",
        "far": "the student copies little from the teacher: train longer, use a larger student, "
               "or raise the KD weight",
    },
    "zh": {
        "none": "没有展示任何样本：请调低 monitor.sample_frequency 或延长训练",
        "collapsed": "学生模型已坍缩：请降低温度或提高硬标签权重",
        "well": "蒸馏效果很好，可以考虑更小的学生模型",
        "off_reference": "学生在模仿老师，但两者都离参考译文很远：请先训练更强的老师再蒸馏",
        "improving": "仍在进步：请训练更多轮次",
        "plateau": "进展停滞在一半：尝试更大的学生模型、更高的蒸馏权重，或用教师初始化学生",
        "worse": "越来越差：请降低学习率并检查是否过拟合",
        "far_improving": "离教师还很远但在进步：请训练更久",
        "far_worse": "越来越偷懒：请降低学习率并检查温度和损失权重",
        "far": "学生从教师那里学到的很少：请延长训练、使用更大的学生模型或提高蒸馏权重",
    },
}


def advice_key(samples_shown: int, final_laziness: float | None, trend: str, collapsed: bool,
               far_from_reference: bool = False) -> str:
    """Which advice the final box gives (a key of the advice table), from the numbers alone: a collapsed student
    is never told it did well, nor one that imitates its teacher closely while both are far from the references."""
    if samples_shown == 0 or final_laziness is None:
        return "none"
    if collapsed:
        return "collapsed"
    if final_laziness < GREEN_BELOW:
        return "off_reference" if far_from_reference else "well"
    if final_laziness < YELLOW_BELOW:
        return {"improving": "improving", "worse": "worse"}.get(trend, "plateau")
    return {"improving": "far_improving", "worse": "far_worse"}.get(trend, "far")

