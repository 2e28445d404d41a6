"""`python -m train.explain`: which words drove a prediction, as a page a person can read.

    python -m train.explain --model DIR --text "..." [--target LABEL] [--method occlusion] [--steps 32] \
        --output FILE.html

Writes FILE.html (self-contained: words shaded green where they pushed towards the target, red
where they pushed away; hover for the value) and FILE.png beside it, and prints the words ranked.
The attributions are app/attribution.py's, the code the Explainer deployment serves.
`python -m train.evaluate --explain-errors N` renders the N most confident mistakes the same way.
"""
from __future__ import annotations

import argparse
import html
import logging
import sys
from pathlib import Path

from app import attribution
from app.config import AppArgs
from train.artifact import ArtifactError, load_model, load_tokenizer, read_info

log = logging.getLogger("train.explain")
GREEN, RED = (22, 163, 74), (220, 38, 38)


def explain_texts(info, texts: list[str], targets: list[str | None], method: str, steps: int) -> list[dict]:
    """One explanation per text, with label names: the shape the pages below render."""
    model, tokenizer = load_model(info), load_tokenizer(info)
    out = []
    for text, target in zip(texts, targets):
        index = None if target is None else info.labels.index(target)
        result = attribution.explain(model, tokenizer, text, info.max_length, index, info.multi_label, method, steps)
        best = max(range(len(info.labels)), key=result["probabilities"].__getitem__)
        out.append(result | {"text": text, "target": info.labels[result["target"]], "predicted": info.labels[best],
                             "method": method})
    return out


def _shade(value: float, scale: float) -> tuple[tuple[int, int, int], float]:
    return (GREEN if value >= 0 else RED), (min(1.0, abs(value) / scale) if scale else 0.0)


def _caption(item: dict) -> str:
    parts = [f"target {item['target']} (p = {item['score']:.3f})", f"predicted {item['predicted']}", item["method"]]
    if item.get("truth") is not None:
        parts.insert(0, f"true label {item['truth']}")
    if item["completeness"]:
        parts.append(f"baseline p = {item['baseline_score']:.3f}, completeness delta {item['completeness']['delta']:.1e}")
    return " · ".join(parts)


def render_html(items: list[dict], title: str) -> str:
    """A self-contained page; every piece of text is escaped (the texts are untrusted input)."""
    blocks = []
    for item in items:
        text, words = item["text"], item["attributions"]
        scale = max((abs(w["attribution"]) for w in words), default=0.0)
        spans, at = [], 0
        for w in words:
            (r, g, b), alpha = _shade(w["attribution"], scale)
            spans.append(html.escape(text[at: w["start"]]))
            spans.append(f'<span style="background: rgba({r},{g},{b},{alpha:.2f})" '
                         f'title="{w["attribution"]:+.3e}">{html.escape(w["text"])}</span>')
            at = w["end"]
        spans.append(html.escape(text[at:]))
        blocks.append(f'<section><p class="caption">{html.escape(_caption(item))}</p>'
                      f'<p class="text">{"".join(spans)}</p></section>')
    return (
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;color:#111}"
        ".caption{color:#555;font-size:.9em;margin-bottom:.2em}.text{font-size:1.2em;line-height:1.9;"
        "white-space:pre-wrap}span{border-radius:3px;padding:0 1px}section{margin-bottom:1.5em}</style></head>"
        f"<body><h1>{html.escape(title)}</h1><p>Green: pushed towards the target label; red: away from it; "
        "darker: more. Hover a word for its attribution.</p>"
        + "".join(blocks) + "</body></html>\n")


def render_png(items: list[dict], path: Path, title: str, width_in: float = 9.0) -> None:
    """The same picture as render_html, for places that show no HTML (a README)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    line_h, fontsize = 0.34, 13
    lines = sum(2.4 + len(it["text"]) // 75 for it in items) + 1
    fig = plt.figure(figsize=(width_in, line_h * lines + 0.6))
    renderer = fig.canvas.get_renderer()
    fig.suptitle(title, x=0.02, ha="left", fontsize=fontsize + 1)
    inch = fig.dpi
    x0, y = 0.2 * inch, fig.bbox.height - 0.8 * inch
    for item in items:
        fig.text(x0 / fig.bbox.width, y / fig.bbox.height, _caption(item), fontsize=fontsize - 4, color="#555")
        y -= line_h * inch
        scale = max((abs(w["attribution"]) for w in item["attributions"]), default=0.0)
        x, at = x0, 0
        for w in item["attributions"]:
            (r, g, b), alpha = _shade(w["attribution"], scale)
            x += 0.1 * inch if item["text"][at: w["start"]].strip() != item["text"][at: w["start"]] else 0.0
            t = fig.text(x / fig.bbox.width, y / fig.bbox.height, w["text"], fontsize=fontsize,
                         bbox={"boxstyle": "round,pad=0.15", "facecolor": (r / 255, g / 255, b / 255, alpha),
                               "edgecolor": "none"})
            advance = t.get_window_extent(renderer).width
            if x + advance > fig.bbox.width - x0 and x > x0:  # wrap: move the word to a new line
                x, y = x0, y - line_h * inch
                t.set_position((x / fig.bbox.width, y / fig.bbox.height))
            x, at = x + advance, w["end"]
        y -= 1.4 * line_h * inch
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_pages(items: list[dict], output: Path, title: str) -> tuple[Path, Path]:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render_html(items, title))
    png = output.with_suffix(".png")
    render_png(items, png, title)
    return output, png


def ranked(item: dict, top: int = 10) -> str:
    words = sorted(item["attributions"], key=lambda w: -w["attribution"])[:top]
    return "\n".join(f"{w['attribution']:+.4f}  {w['text']}" for w in words)


def main(argv: list[str] | None = None) -> int:
    defaults = AppArgs()  # the server's default steps: the CLI explains as the API does
    p = argparse.ArgumentParser(prog="python -m train.explain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="artifact directory")
    p.add_argument("--text", required=True)
    p.add_argument("--target", help="label to explain (default: the predicted one)")
    p.add_argument("--method", choices=attribution.METHODS, default="integrated_gradients")
    p.add_argument("--steps", type=int, default=defaults.explain_default_steps)
    p.add_argument("--output", required=True, type=Path, help="FILE.html (FILE.png is written beside it)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        info = read_info(args.model)
    except ArtifactError as err:
        log.error("%s", err)
        return 2
    if args.target is not None and args.target not in info.labels:
        log.error("--target %r is not a label of this model; labels: %s", args.target, info.labels)
        return 2
    if not args.text.strip() or args.steps < 1:
        log.error("--text must not be empty and --steps must be at least 1")
        return 2
    (item,) = explain_texts(info, [args.text], [args.target], args.method, args.steps)
    page, png = write_pages([item], args.output, f"Why {item['target']}?")
    print(ranked(item))  # noqa: T201 - the command's output
    log.info("wrote %s and %s", page, png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
