"""HTML building blocks of the reports: one inline style sheet, escaped tables, figures.

Pages carry no JavaScript and a Content-Security-Policy that lets nothing but inline styles
and ``data:`` images load, so a report opens offline and can be archived or mailed as is.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from urllib.parse import urlsplit

import numpy as np
from matplotlib.figure import Figure

#: Figure resolution: figures are FIG_WIDTH_IN (figures.py) x DPI pixels wide.
DPI = 100

_CSS = """
body { font-family: sans-serif; margin: 0 auto; max-width: 1260px; padding: 0 16px 40px;
       color: #222; background: #fff; line-height: 1.4; }
h1 { font-size: 1.6em; border-bottom: 2px solid #444; padding-bottom: 6px; }
h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #bbb; }
nav a { margin-right: 1em; }
figure { margin: 0.5em 0 1.5em; }
figure img { max-width: 100%; height: auto; display: block; background: #000; }
figure.plot img { background: #fff; }
figcaption { font-size: 0.9em; color: #555; margin-top: 4px; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.flag { background: #ffd6d6; font-weight: bold; }
table.cohort { table-layout: fixed; width: 100%; font-size: 0.8em; }
table.cohort th, table.cohort td { padding: 2px 3px; overflow-wrap: anywhere; }
.warnings { background: #fff3cd; border: 2px solid #e0a800; padding: 8px 14px; }
.warnings li { margin: 3px 0; }
.ok { background: #e8f5e9; border: 1px solid #81c784; padding: 8px 14px; }
.flagged { background: #fde2e2; border: 2px solid #d9534f; padding: 8px 14px; }
pre { background: #f6f6f6; border: 1px solid #ddd; padding: 10px; overflow-x: auto;
      white-space: pre-wrap; overflow-wrap: anywhere; }
dl.checks dt { font-weight: bold; margin-top: 0.6em; }
"""
#: Nothing but inline styles and data: images may load.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: object) -> str:
    """Numbers for tables: integers as is, 4 significant digits, 1 decimal from 1000."""
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(value)
    if isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return "n/a"
        if float(value).is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.1f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))


def scalar(value: object) -> object:
    """pandas/numpy scalars as Python numbers (kept as strings when not numeric)."""
    return value.item() if isinstance(value, np.generic) else value


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """An HTML table; cells are escaped, numbers formatted and right-aligned."""
    out = ["<table>", "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = []
        for value in row:
            cls = ' class="num"' if is_number(value) else ""
            cells.append(f"<td{cls}>{esc(fmt(value))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def png(fig: Figure) -> tuple[str, int, int]:
    """``(data URI, width, height)`` of ``fig`` as a PNG (no metadata)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor=fig.get_facecolor(),
                metadata={"Software": None})
    width, height = (round(v * DPI) for v in fig.get_size_inches())
    fig.clear()
    return ("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"),
            width, height)


def figure_html(fig: Figure, alt: str, caption: str, image_map: str = "",
                css_class: str = "") -> str:
    """``fig`` as an embedded PNG with its caption; ``image_map``: the ``<map>`` element's
    name, whose areas give each plotted subject a tooltip and a link."""
    uri, width, height = png(fig)
    usemap = f' usemap="#{esc(image_map)}"' if image_map else ""
    cls = f' class="{esc(css_class)}"' if css_class else ""
    return (f'<figure{cls}><img src="{uri}" width="{width}" height="{height}" '
            f'alt="{esc(alt)}"{usemap}><figcaption>{esc(caption)}</figcaption></figure>')


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}">\n<h2>{esc(title)}</h2>\n{body}\n</section>'


def page(title: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """A complete HTML page from ``(anchor, title, body HTML)`` sections."""
    nav = " ".join(f'<a href="#{a}">{esc(t)}</a>' for a, t, _ in sections)
    body = "\n".join(section(*s) for s in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<link rel="icon" href="data:,">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{esc(title)}</h1>\n<nav>{nav}</nav>\n{body}\n</body>\n</html>\n")


def relative_href(link: str) -> str:
    """``link`` escaped for an href; absolute or remote links are refused."""
    parts = urlsplit(link)
    if parts.scheme or parts.netloc or link.startswith(("/", "\\")):
        raise ValueError(f"report link {link!r} must be a relative path like 'sub-01.html' "
                         "(reports never point outside their folder)")
    return esc(link)
