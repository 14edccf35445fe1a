"""The dose report: a static HTML page with inline SVG charts from the embedded index.

Views (the same as the shipped Splunk and Kibana dashboards):

1. studies by modality by day;
2. CT DLP (mGy.cm) and CTDIvol (mGy) by protocol (PS3.16 TID 10013);
3. fluoroscopy / projection DAP (Gy.m2) by procedure (PS3.16 TID 10003).

Everything is escaped; the page loads nothing from the network.
"""

from __future__ import annotations

import datetime as _dt
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from copydicom.sinks.sqlite_index._index import readonly_query

STUDIES_BY_MODALITY_BY_DAY = (
    "SELECT st.study_date AS day, coalesce(se.modality, '?') AS modality, count(DISTINCT st.study_uid) AS studies "
    "FROM studies st JOIN series se ON se.study_uid = st.study_uid "
    "WHERE st.study_date IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2"
)
CT_DOSE_BY_PROTOCOL = (
    "SELECT coalesce(protocol, '(none)') AS protocol, count(*) AS events, avg(dlp) AS mean_dlp, max(dlp) AS max_dlp, "
    "avg(ctdivol) AS mean_ctdivol, max(ctdivol) AS max_ctdivol FROM dose_events "
    "WHERE event_kind = 'CT' GROUP BY 1 ORDER BY mean_dlp DESC"
)
DAP_BY_PROCEDURE = (
    "SELECT coalesce(procedure, '(none)') AS procedure, count(*) AS events, sum(dap) AS total_dap, avg(dap) AS mean_dap "
    "FROM dose_events WHERE event_kind IN ('projection', 'fluoro', 'mammography') AND dap IS NOT NULL "
    "GROUP BY 1 ORDER BY total_dap DESC"
)

_PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f")


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def bar_chart(labels: Sequence[str], series: dict[str, Sequence[float]], *, title: str, unit: str,
              width: int = 760, bar_height: int = 16) -> str:
    """Horizontal grouped bars as inline SVG (one group per label)."""
    names = list(series)
    peak = max([v for vals in series.values() for v in vals if v is not None] or [1.0]) or 1.0
    label_w, pad = 220, 6
    group_h = bar_height * len(names) + pad
    height = 40 + group_h * max(len(labels), 1) + 20 * len(names)
    plot_w = width - label_w - 90
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
              f'aria-label="{_esc(title)}"><title>{_esc(title)}</title>')]
    y = 30
    for i, label in enumerate(labels):
        parts.append(f'<text x="{label_w - 8}" y="{y + group_h / 2}" text-anchor="end" font-size="12" '
                     f'dominant-baseline="middle">{_esc(label)[:40]}</text>')
        for j, name in enumerate(names):
            value = series[name][i] or 0.0
            w = max(plot_w * value / peak, 0.5)
            parts.append(f'<rect x="{label_w}" y="{y + j * bar_height}" width="{w:.1f}" height="{bar_height - 2}" '
                         f'fill="{_PALETTE[j % len(_PALETTE)]}"><title>{_esc(name)}: {_fmt(value)} {_esc(unit)}'
                         f'</title></rect>')
            parts.append(f'<text x="{label_w + w + 4:.1f}" y="{y + j * bar_height + bar_height / 2}" font-size="11" '
                         f'dominant-baseline="middle">{_fmt(value)}</text>')
        y += group_h
    for j, name in enumerate(names):
        parts.append(f'<rect x="{label_w}" y="{y + 6 + 20 * j}" width="12" height="12" '
                     f'fill="{_PALETTE[j % len(_PALETTE)]}"/><text x="{label_w + 18}" y="{y + 16 + 20 * j}" '
                     f'font-size="12">{_esc(name)} ({_esc(unit)})</text>')
    parts.append("</svg>")
    return "".join(parts)


def stacked_days_chart(rows: list[dict[str, Any]], *, width: int = 760, height: int = 260) -> str:
    """Studies per day, stacked by modality, as inline SVG columns."""
    days = sorted({r["day"] for r in rows})
    modalities = sorted({r["modality"] for r in rows})
    counts = {(r["day"], r["modality"]): int(r["studies"]) for r in rows}
    totals = [sum(counts.get((d, m), 0) for m in modalities) for d in days]
    peak = max(totals or [1])
    left, bottom, top = 40, 40, 20
    plot_w, plot_h = width - left - 130, height - bottom - top
    col_w = plot_w / max(len(days), 1)
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
              f'aria-label="Studies by modality by day"><title>Studies by modality by day</title>'),
             f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#999"/>',
             f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" font-size="11">{peak}</text>']
    for i, day in enumerate(days):
        x = left + i * col_w
        y: float = float(top + plot_h)
        for j, modality in enumerate(modalities):
            n = counts.get((day, modality), 0)
            if not n:
                continue
            h = plot_h * n / peak
            y -= h
            parts.append(f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{max(col_w - 2, 1):.1f}" height="{h:.1f}" '
                         f'fill="{_PALETTE[j % len(_PALETTE)]}"><title>{_esc(day)} {_esc(modality)}: {n}</title></rect>')
        if len(days) <= 31 or i % max(len(days) // 15, 1) == 0:
            parts.append(f'<text x="{x + col_w / 2:.1f}" y="{top + plot_h + 14}" font-size="10" text-anchor="end" '
                         f'transform="rotate(-40 {x + col_w / 2:.1f} {top + plot_h + 14})">{_esc(day)}</text>')
    for j, modality in enumerate(modalities):
        parts.append(f'<rect x="{left + plot_w + 16}" y="{top + 20 * j}" width="12" height="12" '
                     f'fill="{_PALETTE[j % len(_PALETTE)]}"/><text x="{left + plot_w + 34}" y="{top + 10 + 20 * j}" '
                     f'font-size="12">{_esc(modality)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p><em>No data.</em></p>"
    head = "".join(f"<th>{_esc(k)}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{_esc(_fmt(v))}</td>" for v in r.values()) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def dose_report_html(db_path: str | Path, *, title: str = "copydicom dose report") -> str:
    """Render the report of the index database at ``db_path`` (opened read-only)."""
    days = list(readonly_query(db_path, STUDIES_BY_MODALITY_BY_DAY))
    ct = list(readonly_query(db_path, CT_DOSE_BY_PROTOCOL))
    dap = list(readonly_query(db_path, DAP_BY_PROCEDURE))
    sections = [
        "<h2>Studies by modality by day</h2>",
        stacked_days_chart(days) if days else "<p><em>No studies.</em></p>",
        "<h2>CT dose by protocol</h2>",
        bar_chart([r["protocol"] for r in ct], {"mean DLP": [r["mean_dlp"] for r in ct]},
                  title="CT DLP by protocol", unit="mGy.cm") if ct else "",
        bar_chart([r["protocol"] for r in ct], {"mean CTDIvol": [r["mean_ctdivol"] for r in ct],
                                                  "max CTDIvol": [r["max_ctdivol"] for r in ct]},
                  title="CT CTDIvol by protocol", unit="mGy") if ct else "",
        _table(ct),
        "<h2>Fluoroscopy / projection DAP by procedure</h2>",
        bar_chart([r["procedure"] for r in dap], {"total DAP": [r["total_dap"] for r in dap]},
                  title="DAP by procedure", unit="Gy.m2") if dap else "",
        _table(dap),
    ]
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    style = ("body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}"
             "th{background:#f4f4f4}td:first-child{text-align:left}")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_esc(title)}</title>"
            f"<style>{style}</style></head><body><h1>{_esc(title)}</h1><p>Generated {generated} from "
            f"the embedded index.</p>{''.join(sections)}</body></html>\n")
