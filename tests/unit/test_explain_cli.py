"""`python -m train.explain` and `train.evaluate --explain-errors`: pages a person can read, safely."""
import html
import re

from train.evaluate import main as evaluate_main
from train.explain import main, render_html

HOSTILE = 'An <script>alert("x")</script> & a <b>bold</b> claim'


def _item(text, words):
    return {"text": text, "attributions": words, "target": "positive", "predicted": "positive", "score": 0.9,
            "method": "integrated_gradients", "baseline_score": 0.5,
            "completeness": {"sum": 0.4, "expected": 0.4, "delta": 0.0}}


def test_page_escapes_the_text_and_keeps_every_character():
    words = [{"text": m.group(), "start": m.start(), "end": m.end(), "attribution": (-1) ** i * 0.1 * i}
             for i, m in enumerate(re.finditer(r"\w+|[^\w\s]", HOSTILE))]
    page = render_html([_item(HOSTILE, words)], "Why <positive>?")
    assert "<script>" not in page and "<b>" not in page and "Why &lt;positive&gt;?" in page
    shown = re.search(r'<p class="text">(.*?)</p>', page).group(1)
    assert html.unescape(re.sub(r"<[^>]+>", "", shown)) == HOSTILE  # every character, in order
    assert "rgba(22,163,74," in page and "rgba(220,38,38," in page  # both signs shaded


def test_cli_writes_html_and_png(tiny_artifact, tmp_path, capsys):
    out = tmp_path / "why.html"
    assert main(["--model", str(tiny_artifact), "--text", HOSTILE, "--target", "negative", "--steps", "4",
                 "--output", str(out)]) == 0
    page = out.read_text()
    assert "<script>" not in page and "target negative" in page and "completeness delta" in page
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert len(capsys.readouterr().out.splitlines()) == 10  # the top 10 words, ranked
    assert main(["--model", str(tiny_artifact), "--text", "x", "--target", "neutral", "--output", str(out)]) == 2


def test_evaluate_explains_its_most_confident_mistakes(tiny_artifact, sentiment_csv, tmp_path):
    out = tmp_path / "eval"
    assert evaluate_main(["--model", str(tiny_artifact), "--data", str(sentiment_csv), "--output", str(out),
                          "--explain-errors", "3"]) == 0
    page = (out / "errors.html").read_text()
    assert page.count("<section>") == 3 and page.count("true label") == 3
    assert (out / "errors.png").read_bytes()[:4] == b"\x89PNG"
