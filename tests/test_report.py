import base64
import json
import re

from distilmt.evaluation.report import pareto_front, write_report


def test_pareto_front_keeps_only_undominated_points():
    # (x higher better, y higher better)
    points = [(1, 1), (2, 3), (3, 2), (0, 5), (1, 0.5)]
    assert sorted(pareto_front(points)) == [1, 2, 3]


def test_report_has_table_plots_and_samples(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    for model, offset in (("teacher", 0.0), ("student-kd", 0.5)):
        writer = SummaryWriter(str(tmp_path / "tb" / model))
        for step in range(1, 6):
            writer.add_scalar("train/loss", 5 - step * 0.5 + offset, step)
            writer.add_scalar("eval/bleu", step + offset, step)
        writer.close()
    rows = [
        {"name": "teacher", "bleu": 10.0, "chrf": 30.0, "params": 1000, "sentences_per_s": 5.0, "collapsed": False},
        {"name": "student-kd", "bleu": 9.0, "chrf": 29.0, "params": 400, "sentences_per_s": 12.0, "collapsed": False},
        {"name": "student-bad", "bleu": 0.1, "chrf": 2.0, "params": 400, "sentences_per_s": 12.0, "collapsed": True},
    ]
    (tmp_path / "metrics.json").write_text(json.dumps({"models": rows}))
    (tmp_path / "translations.json").write_text(json.dumps({
        "sources": ["a b c", "d e"], "references": ["x y z", "v w"],
        "hypotheses": {"teacher": ["x y z", "v w"], "student-kd": ["x y", "v"], "student-bad": ["q", "q"]}}))
    md = write_report(tmp_path).read_text()
    assert "| teacher |" in md and "student-kd" in md
    assert "collapsed model(s): student-bad" in md
    assert "| a b c | x y z | x y z | x y | q |" in md
    page = (tmp_path / "report.html").read_text()
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(images) == 2  # training curves, quality vs size/speed
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert "class='bad'" in page
