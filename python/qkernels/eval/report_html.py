"""``report.html``: one self-contained page (inline CSS, plots as base64 PNG data URIs, no external
request). An inline script marks ``<body>`` once the page has loaded: ``data-images-loaded`` and
``data-images-broken`` count the images that decoded (``naturalWidth > 0``) and those that did not,
so a headless browser can check that every plot renders."""

from __future__ import annotations

import base64
import html
import re
import struct
from collections.abc import Sequence

from .report_tables import Section, Table

__all__ = ["render_html"]


_CSS = """
:root { --ink: #1d2330; --muted: #5b6472; --line: #dde1e7; --band: #f5f7fa; --accent: #1f77b4; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff;
  font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Helvetica, Arial, sans-serif; }
header { background: var(--ink); color: #fff; padding: 24px 32px 16px; }
header h1 { margin: 0 0 4px; font-size: 26px; font-weight: 600; }
header .generated { margin: 0; color: #c5cbd5; font-size: 13px; }
nav { margin-top: 12px; display: flex; flex-wrap: wrap; gap: 6px 18px; font-size: 14px; }
nav a { color: #fff; text-decoration: none; border-bottom: 1px solid #7d8696; }
main { max-width: 1320px; margin: 0 auto; padding: 8px 32px 48px; }
h2 { margin: 36px 0 8px; padding-bottom: 4px; border-bottom: 2px solid var(--accent); font-size: 21px; }
h3 { margin: 22px 0 6px; font-size: 16px; color: var(--muted); }
p { margin: 6px 0 10px; max-width: 80ch; }
.scroll { overflow-x: auto; width: fit-content; max-width: 100%; margin: 6px 0 14px;
  border: 1px solid var(--line); border-radius: 6px; }
table { border-collapse: collapse; font-size: 13.5px; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 9px; border-bottom: 1px solid var(--line); white-space: nowrap; text-align: right; }
th.name, td.name { text-align: left; }
th { background: var(--band); font-weight: 600; position: sticky; top: 0; }
tbody tr:nth-child(even) { background: #fafbfc; }
tbody tr:hover { background: #eef4fb; }
figure { margin: 18px 0 28px; padding: 12px; border: 1px solid var(--line); border-radius: 6px; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { margin-top: 8px; color: var(--muted); font-size: 14px; }
figcaption b { color: var(--ink); }
figure.skipped { background: var(--band); }
"""

# Runs after every image has loaded or failed (the window's load event), so the counts are final.
_SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var loaded = images.filter(function (img) { return img.complete && img.naturalWidth > 0; });
  document.body.setAttribute("data-images-loaded", String(loaded.length));
  document.body.setAttribute("data-images-broken", String(images.length - loaded.length));
});
"""


def _png_size(png: bytes) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk, so the page reserves the space before decoding."""
    return struct.unpack(">II", png[16:24])


def _anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _cells(tag: str, row: list[str], left: int) -> str:
    return "".join(
        f'<{tag} class="name">{html.escape(c)}</{tag}>' if i < left else f"<{tag}>{html.escape(c)}</{tag}>"
        for i, c in enumerate(row)
    )


def _table(t: Table) -> str:
    head = _cells("th", t.header, t.left)
    body = "\n".join(f"<tr>{_cells('td', row, t.left)}</tr>" for row in t.rows)
    return (
        f'<div class="scroll"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n'
        "</table></div>"
    )


def _figure(plot) -> str:
    cap = f"<b>{plot.number}. {html.escape(plot.title)}.</b> "
    if plot.png is None:
        why = html.escape(plot.skipped)
        return f'<figure class="skipped"><figcaption>{cap}Not drawn: {why}.</figcaption></figure>'
    w, h = _png_size(plot.png)
    src = "data:image/png;base64," + base64.b64encode(plot.png).decode("ascii")
    return (
        f'<figure id="plot-{plot.number:02d}"><img src="{src}" alt="{html.escape(plot.title)}" '
        f'width="{w}" height="{h}"><figcaption>{cap}{html.escape(plot.caption)}</figcaption></figure>'
    )


def render_html(title: str, sections: Sequence[Section], plots: Sequence, generated_at: str) -> str:
    """The page: ``sections`` as (heading, paragraph, [(sub-heading, Table)]), then the ``plots``
    (:class:`~qkernels.eval.report_plots.ReportPlot`) in order."""
    headings = [s[0] for s in sections] + ["Plots"]
    nav = "".join(f'<a href="#{_anchor(h)}">{html.escape(h)}</a>' for h in headings)
    parts = []
    for heading, text, tables in sections:
        parts.append(f'<section id="{_anchor(heading)}"><h2>{html.escape(heading)}</h2>')
        if text:
            parts.append(f"<p>{html.escape(text)}</p>")
        for sub, table in tables:
            if sub:
                parts.append(f"<h3>{html.escape(sub)}</h3>")
            parts.append(_table(table))
        parts.append("</section>")
    parts.append('<section id="plots"><h2>Plots</h2>')
    parts += [_figure(p) for p in plots]
    parts.append("</section>")
    body = "\n".join(parts)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<header>
<h1>{html.escape(title)}</h1>
<p class="generated">Generated at {html.escape(generated_at)}</p>
<nav>{nav}</nav>
</header>
<main>
{body}
</main>
<script>{_SCRIPT}</script>
</body>
</html>
"""
