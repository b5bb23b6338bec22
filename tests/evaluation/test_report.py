import base64
import json
import re
import shutil
import subprocess

import pytest

from distilmt.evaluation.report import pareto_front, write_report


def test_pareto_front_keeps_only_undominated_points():
    # (x higher better, y higher better)
    points = [(1, 1), (2, 3), (3, 2), (0, 5), (1, 0.5)]
    assert sorted(pareto_front(points)) == [1, 2, 3]


def _write_run(tmp_path):
    """A run directory with TensorBoard curves, metrics.json and translations.json for three models."""
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


def test_report_has_table_plots_and_samples(tmp_path):
    _write_run(tmp_path)
    md = write_report(tmp_path).read_text()
    assert "| teacher |" in md and "student-kd" in md
    assert "collapsed model(s): student-bad" in md
    assert "| a b c | x y z | x y z | x y | q |" in md
    page = (tmp_path / "report.html").read_text()
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(images) == 2  # training curves, quality vs size/speed
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert "class='bad'" in page


CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "chromium-headless-shell",
                                                 "google-chrome") if shutil.which(name)), None)


@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium (apt-get install -y chromium-headless-shell)")
def test_report_html_renders_in_headless_chromium(tmp_path):
    """Every <img> of report.html decodes in a real browser and a screenshot renders."""
    _write_run(tmp_path)
    write_report(tmp_path)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    probe = ("<script>window.addEventListener('load', () => document.body.setAttribute('data-images', "
             "[...document.images].map(i => i.complete && i.naturalWidth > 0).join(',')));</script>")
    (tmp_path / "probe.html").write_text(page.replace("</body>", probe + "</body>") if "</body>" in page
                                         else page + probe, encoding="utf-8")
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"]
    dom = subprocess.run([*flags, "--dump-dom", (tmp_path / "probe.html").as_uri()], capture_output=True,
                         text=True, timeout=120).stdout
    loaded = re.search(r'data-images="([^"]*)"', dom)
    assert loaded, "the page's load event never ran"
    assert loaded.group(1).split(",") == ["true", "true"]  # training curves, quality vs size/speed
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,2000", (tmp_path / "report.html").as_uri()],
                   capture_output=True, timeout=120)
    assert shot.is_file() and shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 10_000
