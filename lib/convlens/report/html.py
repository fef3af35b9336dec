"""HTML building blocks: the page frame, escaped text, embedded figures, number tables."""
from __future__ import annotations

import base64
import csv
import html
import re
from pathlib import Path

CSS = """
body{font:16px/1.55 Georgia,'Times New Roman',serif;color:#222;max-width:60rem;margin:2rem auto;padding:0 1rem}
h1,h2,h3{font-family:Helvetica,Arial,sans-serif;line-height:1.2}h2{border-bottom:2px solid #ddd;margin-top:2.5rem}
table{border-collapse:collapse;margin:.8rem 0;font:14px Helvetica,Arial,sans-serif;display:block;max-width:100%;overflow-x:auto}  /* wide tables scroll, the page does not */
td,th{border:1px solid #ccc;padding:.25rem .55rem;text-align:left}th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{display:inline-block;margin:.5rem;vertical-align:top;max-width:100%}
figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:13px;color:#555;max-width:28rem}
.bar{display:inline-block;height:.7rem;background:#4a7ab5;vertical-align:middle;margin-right:.4rem}
.note{background:#f7f7f2;border-left:4px solid #c9b458;padding:.6rem 1rem}
pre{background:#f6f6f6;padding:.6rem;overflow:auto;font-size:12px}math{font-size:1.1em}
nav a{margin-right:1rem}
.pair{display:flex;gap:1rem}.pair figure{margin:.5rem 0}
"""

# Marks the page once every image decoded, so a headless browser can check the embedding.
ONLOAD = """<script>window.addEventListener('load',function(){var i=document.images,n=0;
for(var k=0;k<i.length;k++){if(i[k].complete&&i[k].naturalWidth>0)n++;}
document.body.dataset.imagesOk=n+'/'+i.length;});</script>"""

INLINE_TAGS = re.compile(r"&lt;(/?)(i|b|em|sub|sup)&gt;")  # the markup a method's note may use


def page(body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width,initial-scale=1'>"
            f"<title>convlens report</title><style>{CSS}</style>{ONLOAD}</head>"
            f"<body>{''.join(body)}</body></html>\n")


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def markup(text: str) -> str:
    """Escaped text in which only <i> <b> <em> <sub> <sup> stay tags."""
    return INLINE_TAGS.sub(r"<\1\2>", esc(text))


def anchor(folder: Path) -> str:
    return "s-" + "".join(c if c.isalnum() else "-" for c in str(folder))[-60:]


def img(path: Path, caption: str = "", width: str = "") -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    mime = "image/jpeg" if Path(path).suffix.lower() in (".jpg", ".jpeg") else "image/png"
    style = f" style='width:{width}'" if width else ""
    return (f"<figure{style}><img alt='{esc(caption or Path(path).name)}' src='data:{mime};base64,{data}'>"
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.0f}"
    return esc(value)


def table(columns: list[str], rows: list[list], bars: int | None = None) -> str:
    """An HTML table; the first column is a label, numbers right-aligned; column `bars` (in [0, 1]) gets a bar."""
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for i, v in enumerate(row):
            num = as_number(v) if i > 0 else None
            bar = (f"<span class='bar' style='width:{max(0.0, min(1.0, num)) * 6:.2f}rem'></span>"
                   if i == bars and num is not None else "")
            cells.append(f"<td class='num'>{bar}{fmt(num)}</td>" if num is not None else f"<td>{esc(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


class Text(str):
    """A table cell shown as written, though it may look like a number (trial id 00000, a W&B id)."""


def as_number(v) -> float | int | None:
    if isinstance(v, (bool, Text)):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        return int(v)
    try:
        return float(v) if v not in ("", None) else None
    except (TypeError, ValueError):
        return None


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return (rows[0], rows[1:]) if rows else ([], [])
