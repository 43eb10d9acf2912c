"""A self-contained HTML page for a person, made from the JSON report (``--html PATH``).

Everything is inline: one ``<style>`` block and inline SVG charts; no scripts, fonts, images or links.
Every string taken from the report goes through :func:`html.escape`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from html import escape

# Chart geometry, in SVG user units (pixels at 100% zoom).
_MARGIN_LEFT, _MARGIN_RIGHT, _MARGIN_TOP = 64, 20, 36
_PLOT_HEIGHT = 260
_LABEL_CHARS = 28
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf")

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #222; max-width: 1400px; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .mono { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.9em; word-break: break-all; }
.chart-box { overflow-x: auto; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
.charts .note { flex-basis: 100%; }
svg.chart { background: #fff; border: 1px solid #e3e3e3; }
svg.chart text { font-size: 11px; fill: #333; }
svg.chart .chart-title { font-size: 13px; font-weight: bold; }
svg.chart .bar-note { font-size: 9px; }
svg.chart .axis { stroke: #555; stroke-width: 1; }
svg.chart .grid { stroke: #e6e6e6; stroke-width: 1; }
.seg-kept { fill: #2b7bb9; }
.seg-removed { fill: #f4a582; }
.seg-pinned { fill: #a0a0a0; }
.seg-original { fill: #7f7f7f; }
.seg-pruned { fill: #2b7bb9; }
svg.chart .point.chosen { stroke: #000; stroke-width: 2.5; }
svg.chart polyline { fill: none; stroke-width: 1.8; }
.note { color: #555; }
ul.settings { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 4px 18px; max-width: 1000px; }
ul.settings b { font-weight: 600; color: #555; }
.legend span { display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; vertical-align: middle; }
"""


# ---------------------------------------------------------------- formatting


def _esc(value: object) -> str:
    """Any report value as escaped HTML text."""
    return escape(str(value), quote=True)


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _num(value: object, digits: int = 4) -> str:
    """A number for a table cell; ``n/a`` for None."""
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}g}" if math.isfinite(value) else str(value)


def _percent(value: object) -> str:
    return f"{value:.1%}" if _finite(value) else "n/a"


def _change(before: object, after: object) -> str:
    """Relative change in percent, ``n/a`` when it is undefined."""
    if not (_finite(before) and _finite(after)) or not before:
        return "n/a"
    return f"{(after - before) / before * 100:+.1f}%"


def _megabytes(size: object) -> str:
    return f"{size / 1e6:.2f} MB" if _finite(size) else "n/a"


def _shorten(text: str, limit: int = _LABEL_CHARS) -> str:
    """Keep the (more distinctive) end of a long tensor name."""
    return text if len(text) <= limit else "\u2026" + text[-(limit - 1):]


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]], css_class: str = "") -> str:
    """An HTML table; every cell is escaped, numbers are right-aligned."""
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{_esc(_num(c))}</td>' if _finite(c) else f"<td>{_esc('n/a' if c is None else c)}</td>"
            for c in row
        )
        body.append(f"<tr>{cells}</tr>")
    attr = f' class="{_esc(css_class)}"' if css_class else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


# ---------------------------------------------------------------- generic charts


@dataclass(frozen=True)
class Segment:
    """One stacked part of a bar."""

    value: float
    kind: str  # CSS suffix: kept, removed, pinned, original, pruned


@dataclass(frozen=True)
class Bar:
    """One bar: its label under the axis, tooltip, stacked segments, and data-* attributes for readers."""

    label: str
    tooltip: str
    segments: tuple[Segment, ...]
    note: str = ""
    data: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True)
class Point:
    """One point of a line chart; ``chosen`` draws it larger and labels it."""

    x: float
    y: float
    tooltip: str
    chosen: bool = False


@dataclass(frozen=True)
class Series:
    """Points of one colour, joined in x order."""

    name: str
    points: tuple[Point, ...]


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round-numbered ticks (steps of 1, 2, 2.5 or 5 times a power of ten) covering [low, high]."""
    if high <= low:
        pad = abs(high) * 0.1 or 1.0
        low, high = (low, high + pad) if low == 0 else (low - pad, high + pad)
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


def _axis_ticks(values: Sequence[float], from_zero: bool) -> list[float]:
    """Ticks of an axis showing ``values``; the first and last tick are the axis bounds."""
    low, high = min(values), max(values)
    return _nice_ticks(min(low, 0.0) if from_zero else low, high)


def _svg_open(chart_id: str, title: str, width: int, height: int) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="{_esc(chart_id)}" class="chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}">',
        f"<title>{_esc(title)}</title>",
        f'<text class="chart-title" x="{_MARGIN_LEFT}" y="20">{_esc(title)}</text>',
    ]


def _y_axis(ticks: Sequence[float], x0: float, x1: float, y_of: Callable[[float], float], label: str) -> list[str]:
    """Horizontal grid lines with tick labels, both axis lines, and the rotated axis label."""
    parts = []
    for tick in ticks:
        y = y_of(tick)
        parts.append(f'<line class="grid" x1="{x0}" x2="{x1}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{_esc(f"{tick:.6g}")}</text>')
    mid = _MARGIN_TOP + _PLOT_HEIGHT / 2
    base = _MARGIN_TOP + _PLOT_HEIGHT
    parts.append(f'<text x="14" y="{mid:.1f}" text-anchor="middle" transform="rotate(-90 14 {mid:.1f})">{_esc(label)}</text>')
    parts.append(f'<line class="axis" x1="{x0}" x2="{x0}" y1="{_MARGIN_TOP}" y2="{base}"/>')
    parts.append(f'<line class="axis" x1="{x0}" x2="{x1}" y1="{base}" y2="{base}"/>')
    return parts


def _scale(ticks: Sequence[float], pixel_from: float, pixel_to: float) -> Callable[[float], float]:
    """A linear map from the span of ``ticks`` onto [pixel_from, pixel_to]."""
    low, high = ticks[0], ticks[-1]
    return lambda value: pixel_from + (value - low) / ((high - low) or 1.0) * (pixel_to - pixel_from)


def _bar_chart(chart_id: str, title: str, bars: Sequence[Bar], y_label: str, bar_width: int = 18,
               label_room: int = 200, vertical_labels: bool = True) -> str:
    """Vertical bars made of stacked segments, each with a note above it and a label under the axis."""
    step = bar_width + max(9, bar_width // 2)
    width = max(300, _MARGIN_LEFT + _MARGIN_RIGHT + step * len(bars))
    height = _MARGIN_TOP + _PLOT_HEIGHT + label_room
    base = _MARGIN_TOP + _PLOT_HEIGHT
    ticks = _axis_ticks([sum(s.value for s in b.segments) for b in bars] or [1.0], from_zero=True)
    y_of = _scale(ticks, base, _MARGIN_TOP)
    parts = _svg_open(chart_id, title, width, height)
    parts += _y_axis(ticks, _MARGIN_LEFT, width - _MARGIN_RIGHT, y_of, y_label)
    for i, bar in enumerate(bars):
        x = _MARGIN_LEFT + step * i + (step - bar_width) / 2
        data = "".join(f' data-{_esc(k)}="{_esc(v)}"' for k, v in bar.data)
        parts.append(f'<g class="bar"{data}><title>{_esc(bar.tooltip)}</title>')
        bottom = 0.0
        for seg in bar.segments:
            y_top, y_bottom = y_of(bottom + seg.value), y_of(bottom)
            parts.append(f'<rect class="seg seg-{_esc(seg.kind)}" data-value="{_esc(seg.value)}" x="{x:.1f}" '
                         f'y="{y_top:.2f}" width="{bar_width}" height="{y_bottom - y_top:.2f}"/>')
            bottom += seg.value
        centre = x + bar_width / 2
        parts.append(f'<text class="bar-note" x="{centre:.1f}" y="{y_of(bottom) - 4:.1f}" '
                     f'text-anchor="middle">{_esc(bar.note)}</text>')
        if vertical_labels:
            parts.append(f'<text class="bar-label" x="{centre:.1f}" y="{base + 8}" text-anchor="end" '
                         f'transform="rotate(-90 {centre:.1f} {base + 8})" dy="4">{_esc(bar.label)}</text></g>')
        else:
            parts.append(f'<text class="bar-label" x="{centre:.1f}" y="{base + 16}" '
                         f'text-anchor="middle">{_esc(bar.label)}</text></g>')
    parts.append("</svg>")
    return f'<div class="chart-box">{"".join(parts)}</div>'


def _line_chart(chart_id: str, title: str, series: Sequence[Series], x_label: str, y_label: str,
                y_from_zero: bool = False, legend: bool = True) -> str:
    """Points joined by lines, one colour per series; chosen points are drawn larger with a black ring."""
    width, legend_room = 640, (16 * ((len(series) + 3) // 4) + 8 if legend else 0)
    height = _MARGIN_TOP + _PLOT_HEIGHT + 44 + legend_room
    points = [p for s in series for p in s.points]
    x0, x1, base = _MARGIN_LEFT, width - _MARGIN_RIGHT, _MARGIN_TOP + _PLOT_HEIGHT
    x_ticks = _nice_ticks(min([0.0] + [p.x for p in points]), max([1.0] + [p.x for p in points]))
    y_ticks = _axis_ticks([p.y for p in points] or [0.0], y_from_zero)
    x_of, y_of = _scale(x_ticks, x0, x1), _scale(y_ticks, base, _MARGIN_TOP)
    parts = _svg_open(chart_id, title, width, height)
    parts += _y_axis(y_ticks, x0, x1, y_of, y_label)
    for tick in x_ticks:
        parts.append(f'<text x="{x_of(tick):.1f}" y="{base + 16}" text-anchor="middle">{_esc(f"{tick:.6g}")}</text>')
    parts.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{base + 36}" text-anchor="middle">{_esc(x_label)}</text>')
    for i, s in enumerate(series):
        colour = _PALETTE[i % len(_PALETTE)]
        ordered = sorted(s.points, key=lambda p: p.x)
        parts.append(f'<g class="series" data-name="{_esc(s.name)}">')
        if len(ordered) > 1:
            coords = " ".join(f"{x_of(p.x):.1f},{y_of(p.y):.1f}" for p in ordered)
            parts.append(f'<polyline stroke="{colour}" points="{coords}"/>')
        for p in ordered:
            cls = "point chosen" if p.chosen else "point"
            parts.append(f'<circle class="{cls}" cx="{x_of(p.x):.1f}" cy="{y_of(p.y):.1f}" r="{7 if p.chosen else 4}" '
                         f'fill="{colour}" data-x="{p.x!r}" data-y="{p.y!r}"><title>{_esc(p.tooltip)}</title></circle>')
            if p.chosen:
                parts.append(f'<text class="chosen-label" x="{x_of(p.x) + 10:.1f}" y="{y_of(p.y) - 10:.1f}">chosen</text>')
        parts.append("</g>")
    if legend:
        for i, s in enumerate(series):
            lx, ly = x0 + (i % 4) * 140, base + 56 + 16 * (i // 4)
            parts.append(f'<rect x="{lx}" y="{ly - 9}" width="10" height="10" fill="{_PALETTE[i % len(_PALETTE)]}"/>'
                         f'<text x="{lx + 14}" y="{ly}">{_esc(_shorten(s.name, 20))}</text>')
    parts.append("</svg>")
    return f'<div class="chart-box">{"".join(parts)}</div>'


# ---------------------------------------------------------------- sections


def _setting(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "(none)"
    return "default" if value is None else str(value)


def _header(report: dict) -> str:
    source = report.get("input")
    parts = [f"<h1>onnxprune report: <code>{_esc(source if source else '(ModelProto given in Python)')}</code></h1>",
             f'<p class="note">report version {_esc(report.get("report_version", "?"))}</p>']
    settings = report.get("settings") or {}
    items = "".join(f"<li><b>{_esc(key)}</b> {_esc(_setting(value))}</li>" for key, value in settings.items())
    parts.append(f'<h2>Settings</h2><ul class="settings">{items}</ul>')
    before, after = report.get("original") or {}, report.get("pruned") or {}
    size_rows = []
    for key, label in (("params", "parameters"), ("macs", "MACs"), ("size_bytes", "file size")):
        b, a = before.get(key), after.get(key)
        show = _megabytes if key == "size_bytes" else _num
        size_rows.append((label, show(b), show(a), _change(b, a)))
    parts.append("<h2>Before and after</h2>" + _table(["", "original", "pruned", "change"], size_rows, "before-after"))
    return "".join(parts)


def _quality(report: dict) -> str:
    parts = ["<h2>Fidelity</h2>"]
    fidelity = report.get("fidelity")
    if not fidelity:
        parts.append('<p class="note">The pruned model was not validated (no fidelity figures).</p>')
    else:
        rows = [(o.get("name"), "\u00d7".join(map(str, o.get("shape") or [])), o.get("cosine"), o.get("relative_l2"))
                for o in fidelity.get("outputs", [])]
        parts.append(_table(["output", "shape", "cosine similarity", "relative L2 error"], rows, "fidelity"))
        parts.append(_table(["top-1 agreement", "top-5 overlap", "held-out samples"],
                            [(_percent(fidelity.get("top1_agreement")), _percent(fidelity.get("top5_overlap")),
                              fidelity.get("samples"))], "fidelity-summary"))
    accuracy = report.get("accuracy")
    if accuracy:
        original, pruned = accuracy.get("original"), accuracy.get("pruned")
        drop = f"{(pruned - original) * 100:+.2f} points" if _finite(original) and _finite(pruned) else "n/a"
        parts.append("<h2>Accuracy</h2>" + _table(["original", "pruned", "change", "labelled samples"],
                                                  [(_percent(original), _percent(pruned), drop, accuracy.get("samples"))],
                                                  "accuracy"))
    return "".join(parts)


def _first_tensor(group: dict) -> str:
    members = group.get("members") or []
    return str(members[0].get("tensor", "")) if members else ""


def _channels_section(report: dict) -> str:
    groups = report.get("groups") or []
    parts = ["<h2>Channels per group before and after</h2>"]
    if not groups:
        return "".join(parts) + '<p class="note">The model has no channel groups.</p>'
    bars = []
    for g in groups:
        channels, kept, reason = g.get("channels", 0), g.get("kept", 0), g.get("pinned_reason")
        first = _first_tensor(g)
        if reason:
            segments, state = (Segment(channels, "pinned"),), "pinned"
            tip = f"group {g.get('index')} ({first}): {channels} channels, pinned: {reason}"
        else:
            fixed = g.get("fixed") or 0
            segments = (Segment(kept, "kept"), Segment(channels - kept, "removed")) + ((Segment(fixed, "pinned"),) if fixed else ())
            state = "pruned" if kept < channels else "unchanged"
            tip = f"group {g.get('index')} ({first}): {kept} of {channels} channels kept"
            if fixed:
                tip += f", and {fixed} more that stay: {g.get('fixed_reason')}"
        note = str(channels) if reason else f"{kept}/{channels}"
        bars.append(Bar(f"#{g.get('index')} {_shorten(first)}", tip, segments, note,
                        (("group", g.get("index")), ("channels", channels), ("kept", kept), ("state", state))))
    parts.append('<p class="legend"><span style="background:#2b7bb9"></span>kept'
                 '<span style="background:#f4a582"></span>removed'
                 '<span style="background:#a0a0a0"></span>pinned (left whole)</p>')
    parts.append(_bar_chart("chart-channels", "Channels per group before and after", bars, "channels"))
    pinned = [g for g in groups if g.get("pinned_reason")]
    if pinned:
        parts.append("<h3>Pinned groups</h3>")
        parts.append(_table(["group", "channels", "first member tensor", "why it is left whole"],
                            [(g.get("index"), g.get("channels"), _first_tensor(g), g.get("pinned_reason")) for g in pinned],
                            "pinned"))
    rows = [(g.get("index"), g.get("channels"), g.get("kept"), len(g.get("members") or []),
             ", ".join(str(m.get("tensor")) for m in g.get("members") or [])) for g in groups]
    parts.append("<details><summary>All groups and their member tensors</summary>"
                 + _table(["group", "channels", "kept", "members", "member tensors"], rows, "groups") + "</details>")
    return "".join(parts)


def _tradeoff_points(rows: list[dict], x_key: str) -> tuple[Point, ...]:
    points = []
    for row in rows:
        x, y = row.get(x_key), row.get("metric")
        if _finite(x) and _finite(y):
            tip = f"{row.get('label', '')}: {x_key} {x:.4g}, {row.get('metric_name', 'metric')} {y:.4g}"
            points.append(Point(float(x), float(y), tip, bool(row.get("chosen"))))
    return tuple(points)


def _tradeoff_section(report: dict) -> str:
    parts = ["<h2>Trade-off</h2>"]
    tradeoff = [r for r in report.get("tradeoff") or [] if isinstance(r, dict)]
    shown = False
    if len(tradeoff) >= 2:  # one point (the chosen model alone) is no trade-off
        shown = True
        name = str(next((r["metric_name"] for r in tradeoff if r.get("metric_name")), "metric"))
        by_macs = _tradeoff_points(tradeoff, "macs_fraction")
        parts.append('<div class="charts">')
        if by_macs:
            parts.append(_line_chart("chart-tradeoff", f"{name} vs MACs fraction", [Series("candidates", by_macs)],
                                     "fraction of the original MACs kept", name, legend=False))
        else:
            parts.append('<p class="note">No candidate of the trade-off search has a measured metric to plot.</p>')
        by_latency = _tradeoff_points(tradeoff, "latency_fraction")
        if by_latency:
            parts.append(_line_chart("chart-tradeoff-latency", f"{name} vs latency fraction",
                                     [Series("candidates", by_latency)], "fraction of the original latency",
                                     name, legend=False))
        parts.append("</div>")
        rows = [(r.get("label"), r.get("macs_fraction"), r.get("latency_fraction"), r.get("metric"),
                 r.get("metric_name"), "yes" if r.get("chosen") else "") for r in tradeoff]
        parts.append(_table(["candidate", "MACs fraction", "latency fraction", "metric", "metric name", "chosen"],
                            rows, "tradeoff"))
    sensitivity = [r for r in report.get("sensitivity") or [] if isinstance(r, dict)]
    if sensitivity:
        by_group: dict[object, list[Point]] = {}
        for row in sensitivity:
            ratio, error = row.get("ratio"), row.get("error")
            if _finite(ratio) and _finite(error):
                tip = f"group {row.get('group')} pruned alone at {ratio:.0%}: error {error:.4g}, MACs {_num(row.get('macs'))}"
                by_group.setdefault(row.get("group"), []).append(Point(float(ratio), float(error), tip))
        series = [Series(f"group {g}", tuple(p)) for g, p in by_group.items()]
        parts.append('<p class="note">The sensitivity scan: each group pruned alone, '
                     "the model's largest relative output error against the ratio removed.</p>")
        parts.append(_line_chart("chart-sensitivity", "Sensitivity: output error vs ratio, per group", series,
                                 "ratio of the group removed", "relative output error", y_from_zero=True))
        rows = [(r.get("group"), r.get("ratio"), r.get("macs"), r.get("error")) for r in sensitivity]
        parts.append("<details><summary>Sensitivity table</summary>"
                     + _table(["group", "ratio", "MACs", "error"], rows, "sensitivity") + "</details>")
        shown = True
    if shown:
        return "".join(parts)
    parts.append('<p class="note">No trade-off to show: it needs <code>--sensitivity</code> or a target '
                 "(<code>--target-macs</code>, <code>--target-latency</code>).</p>")
    return "".join(parts)


def _latency_section(report: dict) -> str:
    latency = report.get("latency")
    parts = ["<h2>Latency (ONNX Runtime)</h2>"]
    if not latency:
        return "".join(parts) + '<p class="note">Latency was not measured (<code>--no-latency</code>).</p>'
    original, pruned = latency.get("original") or {}, latency.get("pruned") or {}
    providers = latency.get("providers") or ["CPUExecutionProvider"]
    speedup = latency.get("speedup")
    rows = [("original", original.get("median_ms"), original.get("p90_ms")),
            ("pruned", pruned.get("median_ms"), pruned.get("p90_ms"))]
    parts.append(_table(["model", "median (ms)", "p90 (ms)"], rows, "latency"))
    parts.append(_table(["speed-up", "runs", "threads", "batch", "providers"],
                        [(f"{speedup:.2f}x" if _finite(speedup) else speedup, latency.get("runs"),
                          latency.get("threads"), latency.get("batch"), ", ".join(map(str, providers)))],
                        "latency-settings"))
    bars = [Bar(name, f"{name}: median {_num(stats.get('median_ms'))} ms, p90 {_num(stats.get('p90_ms'))} ms",
                (Segment(float(stats.get("median_ms") or 0.0), name),), f"{_num(stats.get('median_ms'))} ms",
                (("model", name), ("median-ms", stats.get("median_ms"))))
            for name, stats in (("original", original), ("pruned", pruned))]
    parts.append(_bar_chart("chart-latency", "Median latency (ms)", bars, "ms", bar_width=60, label_room=30,
                            vertical_labels=False))
    return "".join(parts)


def _calibration_section(report: dict) -> str:
    """Where the calibration data came from, what compensation did to each consumer, and the run's notes."""
    parts = []
    calibration = report.get("calibration")
    if isinstance(calibration, dict):
        parts.append("<h2>Calibration and compensation</h2>")
        parts.append(f'<p class="note">{_esc(calibration.get("calibration"))}; {_esc(calibration.get("held_out"))}.</p>')
    records = [r for r in report.get("compensation") or [] if isinstance(r, dict)]
    if records:
        if not parts:
            parts.append("<h2>Calibration and compensation</h2>")
        rows = [(r.get("node"), r.get("method"), r.get("removed"), r.get("kept"), r.get("error_ratio")) for r in records]
        parts.append(_table(["consumer", "method", "inputs removed", "inputs kept", "error vs none"], rows,
                            "compensation"))
    notes = [n for n in report.get("notes") or [] if isinstance(n, str)]
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_esc(n)}</li>" for n in notes) + "</ul>")
    return "".join(parts)


def render_html(report: dict) -> str:
    """The whole report as one self-contained HTML page."""
    source = report.get("input")
    title = f"onnxprune report: {source}" if source else "onnxprune report"
    body = "".join((_header(report), _quality(report), _channels_section(report), _tradeoff_section(report),
                    _latency_section(report), _calibration_section(report)))
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{_esc(title)}</title>\n'
            f"<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")
