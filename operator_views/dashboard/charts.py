"""The dashboard's charts: inline SVG built on the server from the dashboard's reads.

No JavaScript and no CDN (the admin must work on machines with no internet), and a screenshot
or a screen reader sees the same numbers as the tables under them. Every label gets room for
its estimated width, so value labels, group names and legend entries never overlap; a chart
wider than the page is scaled down as a whole by CSS (labels keep their distances).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from .reads import HourBucket

PALETTE = {"hour": "#417690", "day": "#79aec8", "p50": "#417690", "p95": "#e0a030"}
OUTCOME_COLOURS = (("joined", "#3a9d5d"), ("failed", "#ba2121"), ("other", "#bbbbbb"))
OUTCOME_NAMES = {"joined": "agent joined", "failed": "failed", "other": "waiting or cancelled"}
TITLE_SIZE, LABEL_SIZE, VALUE_SIZE, TICK_SIZE = 13, 11, 10, 10
GROUP_LABEL_CHARS = 24


def _svg(width: int, height: int, title: str, body: list[str]) -> SafeString:
    content = "".join(body)
    return mark_safe(  # noqa: S308  every text inside went through escape()
        f'<svg xmlns="http://www.w3.org/2000/svg" class="dp-chart" role="img" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>{content}</svg>"
    )


def _text(x: float, y: float, text: str, *, size: int, anchor: str = "start", fill: str = "#333") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{fill}">'
        f"{escape(text)}</text>"
    )


def _title(title: str, *, left: int) -> str:
    return (
        f'<text x="{left}" y="16" font-size="{TITLE_SIZE}" font-weight="bold" fill="#333">'
        f"{escape(title)}</text>"
    )


def grouped_bar_chart(
    *,
    title: str,
    groups: Sequence[str],
    series: Sequence[tuple[str, str, Sequence[float | None]]],
    maximum: float | None = None,
    unit: str = "",
    value_format: str = "{:.0f}",
) -> SafeString:
    """Bars per group (e.g. agent), one per series (label, colour, values); missing values
    are shown as "–" so an empty bar is not mistaken for zero. A bar is as wide as the
    widest value label, and a group as wide as its name, so no two labels share space."""
    left, top, bottom, gap, pad = 48, 38, 50, 4, 24
    shown = [value_format.format(v) + unit for _, _, vs in series for v in vs if v is not None]
    bar = max(18, *(_text_width(label, VALUE_SIZE) for label in shown)) if shown else 18
    names = [_clip(g or "(unnamed agent)") for g in groups]
    bars_width = len(series) * (bar + gap) - gap
    group_width = max(bars_width, *(_text_width(n, LABEL_SIZE) for n in names)) + pad if names else 0
    legend = [(label, colour) for label, colour, _ in series]
    width = max(
        360,
        left + 12 + group_width * max(1, len(groups)),
        left + _text_width(title, TITLE_SIZE),
        left + _legend_width(legend) + 8,
    )
    height = 240
    plot = height - top - bottom
    values = [v for _, _, vs in series for v in vs if v is not None]
    ticks = _ticks(maximum or (max(values) if values else 1.0))
    top_value = ticks[-1]
    body = [
        _title(title, left=left),
        *_grid(ticks, left=left, right=width - 8, top=top, plot=plot, unit=unit),
    ]
    for g, name in enumerate(names):
        start = left + 12 + g * group_width
        x0 = start + (group_width - pad - bars_width) / 2
        for s, (_, colour, vs) in enumerate(series):
            value = vs[g]
            centre = x0 + s * (bar + gap) + bar / 2
            if value is None:
                body.append(_text(centre, top + plot - 4, "–", size=VALUE_SIZE, anchor="middle", fill="#999"))
                continue
            label = value_format.format(value) + unit
            h = max(1.0, plot * min(value, top_value) / top_value)
            y = top + plot - h
            body.append(
                f'<rect x="{centre - bar / 2:.1f}" y="{y:.1f}" width="{bar}" height="{h:.1f}" fill="{colour}">'
                f"<title>{escape(label)}</title></rect>"
            )
            body.append(_text(centre, y - 3, label, size=VALUE_SIZE, anchor="middle"))
        body.append(
            _text(
                start + (group_width - pad) / 2, height - bottom + 16, name, size=LABEL_SIZE, anchor="middle"
            )
        )
    body += _legend(legend, x=left, y=height - 18)
    return _svg(width, height, title, body)


def stacked_hours_chart(*, title: str, buckets: Sequence[HourBucket]) -> SafeString:
    left, top, bottom, width, height = 48, 30, 50, 720, 220
    plot = height - top - bottom
    totals = [b.joined + b.failed + b.other for b in buckets]
    ticks = _ticks(max(totals, default=0) or 1.0, integer=True)
    top_value = ticks[-1]
    step = (width - left - 12) / max(1, len(buckets))
    every = max(1, math.ceil(_text_width("00:00", TICK_SIZE) / step))
    body = [_title(title, left=left), *_grid(ticks, left=left, right=width - 8, top=top, plot=plot)]
    for i, bucket in enumerate(buckets):
        x = left + 4 + i * step
        y = top + plot
        for key, colour in OUTCOME_COLOURS:
            count = getattr(bucket, key)
            if not count:
                continue
            h = plot * count / top_value
            y -= h
            body.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{step - 3:.1f}" height="{h:.1f}" fill="{colour}">'
                f"<title>{bucket.start:%H:00} UTC: {count} {OUTCOME_NAMES[key]}</title></rect>"
            )
        if i % every == 0:
            body.append(
                _text(
                    x + step / 2,
                    top + plot + 14,
                    f"{bucket.start:%H:00}",
                    size=TICK_SIZE,
                    anchor="middle",
                    fill="#666",
                )
            )
    body += _legend([(OUTCOME_NAMES[key], colour) for key, colour in OUTCOME_COLOURS], x=left, y=height - 18)
    return _svg(width, height, title, body)


def _ticks(maximum: float, *, integer: bool = False) -> list[float]:
    """Round axis ticks from 0 to at least `maximum`: steps of 1, 2, 2.5 or 5 times a power
    of ten (no 2.5 for counts), four or five of them."""
    maximum = maximum if maximum > 0 else 1.0
    raw = maximum / 4
    power = 10 ** math.floor(math.log10(raw))
    factors = (1, 2, 5, 10) if integer else (1, 2, 2.5, 5, 10)
    step = next(f * power for f in factors if f * power >= raw - 1e-12)
    if integer:
        step = max(1.0, step)
    count = max(1, math.ceil(maximum / step - 1e-9))
    return [step * i for i in range(count + 1)]


def _grid(ticks: Sequence[float], *, left: int, right: int, top: int, plot: int, unit: str = "") -> list[str]:
    parts = []
    for value in ticks:
        y = top + plot - plot * value / ticks[-1]
        parts.append(f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        parts.append(_text(left - 4, y + 4, f"{value:g}{unit}", size=TICK_SIZE, anchor="end", fill="#666"))
    return parts


def _clip(name: str) -> str:
    return name if len(name) <= GROUP_LABEL_CHARS else name[: GROUP_LABEL_CHARS - 1] + "…"


def _text_width(text: str, size: int) -> int:
    """A generous estimate (wide glyphs such as % and m included) for the admin's sans-serif."""
    return int(len(text) * size * 0.62) + 8


def _legend_width(items: Sequence[tuple[str, str]]) -> int:
    return sum(14 + _text_width(label, LABEL_SIZE) + 10 for label, _ in items)


def _legend(items: Sequence[tuple[str, str]], *, x: int, y: int) -> list[str]:
    parts = []
    for label, colour in items:
        parts.append(f'<rect x="{x}" y="{y}" width="10" height="10" fill="{colour}"/>')
        parts.append(_text(x + 14, y + 9, label, size=LABEL_SIZE))
        x += 14 + _text_width(label, LABEL_SIZE) + 10
    return parts
