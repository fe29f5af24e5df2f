"""A self-contained HTML report: sections of text, tables and PNG figures embedded as base64.

One file that opens anywhere (mailed, archived, viewed offline) with no folder beside it. Every
piece of text is HTML-escaped; the studies build a list of :class:`Section` and call
:func:`write_html`. Kept generic so the selection study, the alignment study and the tokenization
study share it.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: 0.3em; }
figure { margin: 1em 0; } figcaption { font-size: 0.9em; color: #555; }
img { max-width: 100%; } p.note { color: #555; font-size: 0.92em; }
"""


@dataclass
class Table:
    headers: Sequence[str]
    rows: Sequence[Sequence[object]]
    caption: str = ""


@dataclass
class Figure:
    png: bytes
    caption: str = ""
    alt: str = ""


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # smaller print after the tables and figures


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def render_table(table: Table) -> str:
    out = ["<table>"]
    if table.caption:
        out.append(f"<caption>{_esc(table.caption)}</caption>")
    out.append("<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in table.headers) + "</tr>")
    for row in table.rows:
        out.append("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def render_figure(fig: Figure) -> str:
    data = base64.b64encode(fig.png).decode("ascii")
    caption = f"<figcaption>{_esc(fig.caption)}</figcaption>" if fig.caption else ""
    return f'<figure><img alt="{_esc(fig.alt or fig.caption)}" src="data:image/png;base64,{data}">{caption}</figure>'


def render_html(title: str, sections: Sequence[Section], *, intro: Sequence[str] = ()) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
    ]
    parts += [f"<p>{_esc(p)}</p>" for p in intro]
    for s in sections:
        parts.append(f"<h2>{_esc(s.title)}</h2>")
        parts += [f"<p>{_esc(p)}</p>" for p in s.paragraphs]
        parts += [render_table(t) for t in s.tables]
        parts += [render_figure(f) for f in s.figures]
        parts += [f'<p class="note">{_esc(n)}</p>' for n in s.notes]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_html(
    path: str | Path,
    title: str,
    sections: Sequence[Section],
    *,
    intro: Sequence[str] = (),
    force: bool = True,
) -> Path:
    """Render and write atomically."""
    from compresslm.data.writers import atomic_output

    text = render_html(title, sections, intro=intro)
    with atomic_output(str(path), force=force, mode="w") as fh:
        fh.write(text)
    return Path(path)
