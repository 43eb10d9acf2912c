"""The HTML report (--html): made from real pruning runs, rendered in a real headless Chromium.

The page Chromium parsed (``--dump-dom``) is read back and its charts are checked against the JSON report;
a screenshot is decoded (zlib and numpy only) to check that the bars are really painted.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import MODELS, conv, make_model

import onnxprune
from onnxprune.html_report import render_html
from onnxprune.latency import LatencySettings, compare_latency

RESNET = MODELS / "resnet.ts.onnx"
TIMEOUT = 60
EVIL = '/stem/<script>alert(1)</script><img src=x onerror=alert(2)>&amp;"\''
KEPT, REMOVED, PINNED = (0x2B, 0x7B, 0xB9), (0xF4, 0xA5, 0x82), (0xA0, 0xA0, 0xA0)  # colours in html_report's CSS


# ---------------------------------------------------------------- Chromium and the DOM it dumps


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Chromium is needed to test the HTML report: install it (Debian: apt-get install chromium)")
    return path


def _chromium(binary: str, page: Path, profile: Path, *mode: str) -> subprocess.CompletedProcess:
    args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--force-color-profile=srgb", "--hide-scrollbars", f"--user-data-dir={profile}", *mode, page.as_uri()]
    done = subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


@dataclass
class Node:
    """An element of the dumped DOM; ``children`` holds elements and text in document order."""

    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text for c in self.children)

    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def elements(self) -> list[Node]:
        return [c for c in self.children if isinstance(c, Node)]

    def find_all(self, tag: str | None = None, cls: str | None = None) -> list[Node]:
        found = []
        for child in self.elements():
            if (tag is None or child.tag == tag) and (cls is None or cls in child.classes()):
                found.append(child)
            found.extend(child.find_all(tag, cls))
        return found

    def by_id(self, ident: str) -> Node | None:
        return next((n for n in self.find_all() if n.attrs.get("id") == ident), None)


class _TreeBuilder(HTMLParser):
    VOID = {"meta", "link", "br", "hr", "img", "input", "col", "area", "base", "wbr", "source"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def dump_dom(binary: str, html: str, tmp: Path) -> Node:
    """The DOM Chromium built from ``html``, parsed back into a tree."""
    page = tmp / "report.html"
    page.write_text(html, encoding="utf-8")
    out = _chromium(binary, page, tmp / "profile", "--dump-dom").stdout
    assert "<svg" in out, out[:500]
    builder = _TreeBuilder()
    builder.feed(out)
    return builder.root


def table_rows(table: Node) -> list[list[str]]:
    return [[c.text.strip() for c in row.elements() if c.tag in ("td", "th")] for row in table.find_all("tr")]


def png_pixels(data: bytes) -> np.ndarray:
    """Decode an 8-bit RGB/RGBA, non-interlaced PNG into an (h, w, channels) array (zlib and numpy only)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[pos + 8:pos + 21])
            assert depth == 8 and colour in (2, 6) and interlace == 0
        elif kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    bpp = 3 if colour == 2 else 4
    stride = width * bpp
    raw = zlib.decompress(idat)
    assert len(raw) == height * (stride + 1)
    image = np.zeros((height, stride), np.uint8)
    prev = bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if kind == 1:  # Sub: running sum per channel
            cells = np.frombuffer(bytes(line), np.uint8).reshape(width, bpp).astype(np.int64)
            line = bytearray((np.cumsum(cells, axis=0) % 256).astype(np.uint8).tobytes())
        elif kind == 2:  # Up (uint8 addition wraps around, as PNG wants)
            line = bytearray((np.frombuffer(bytes(line), np.uint8) + np.frombuffer(bytes(prev), np.uint8)).tobytes())
        elif kind in (3, 4):  # Average, Paeth: sequential
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
                if kind == 3:
                    line[i] = (line[i] + ((a + b) >> 1)) & 255
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        image[y] = np.frombuffer(bytes(line), np.uint8)
        prev = line
    return image.reshape(height, width, bpp)[..., :3]


# ---------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> tuple[dict, str]:
    """The command line on the ResNet fixture with --sensitivity, a MACs target and latency: JSON and HTML."""
    out = tmp_path_factory.mktemp("cli")
    done = subprocess.run(
        [sys.executable, "-m", "onnxprune", str(RESNET), "-o", str(out / "out.onnx"), "--sensitivity",
         "--target-macs", "0.5", "--report", str(out / "r.json"), "--html", str(out / "r.html"), "-q"],
        capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads((out / "r.json").read_text()), (out / "r.html").read_text(encoding="utf-8")


def _worst_cosine(report: dict) -> float:
    return min(o["cosine"] for o in report["fidelity"]["outputs"])


@pytest.fixture(scope="module")
def tradeoff(cli_run) -> list[dict]:
    """Trade-off points from real runs: the CLI result (chosen), ratio 0.3 with measured latency, ratio 0.7 without."""
    report, _ = cli_run
    rows = [{"label": "target-macs 0.5", "macs_fraction": report["pruned"]["macs"] / report["original"]["macs"],
             "latency_fraction": report["latency"]["pruned"]["median_ms"] / report["latency"]["original"]["median_ms"],
             "metric": _worst_cosine(report), "metric_name": "cosine <similarity>", "chosen": True}]
    for ratio in (0.3, 0.7):
        result = onnxprune.prune(RESNET, ratio=ratio)
        latency = None
        if ratio == 0.3:
            timing = compare_latency(str(RESNET), result.model, LatencySettings(runs=20, warmup=2))
            latency = timing.pruned.median_ms / timing.original.median_ms
        rows.append({"label": f"ratio {ratio}", "macs_fraction": result.pruned.macs / result.original.macs,
                     "latency_fraction": latency, "metric": _worst_cosine(result.report),
                     "metric_name": "cosine <similarity>", "chosen": False})
    return rows


# ---------------------------------------------------------------- tests


def test_cli_page_renders_tables_and_channel_chart(cli_run, chromium, tmp_path):
    report, html = cli_run
    assert html == render_html(report)  # the CLI wrote exactly the rendering of its JSON report
    assert "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html and "<link" not in html and "<img" not in html
    dom = dump_dom(chromium, html, tmp_path)

    before_after = table_rows(dom.find_all("table", "before-after")[0])
    assert before_after[1] == ["parameters", f"{report['original']['params']:,}", f"{report['pruned']['params']:,}",
                               f"{(report['pruned']['params'] / report['original']['params'] - 1) * 100:+.1f}%"]
    assert before_after[2][:3] == ["MACs", f"{report['original']['macs']:,}", f"{report['pruned']['macs']:,}"]
    fidelity = table_rows(dom.find_all("table", "fidelity")[0])
    output = report["fidelity"]["outputs"][0]
    assert fidelity[1][0] == output["name"] and float(fidelity[1][2]) == pytest.approx(output["cosine"], rel=1e-3)

    chart = dom.by_id("chart-channels")
    assert chart is not None and chart.tag == "svg"
    assert chart.elements()[0].tag == "title" and "channels per group" in chart.children[0].text.lower()
    bars = chart.find_all("g", "bar")
    assert len(bars) == len(report["groups"]) > 2
    px_per_channel = []
    for bar, group in zip(bars, report["groups"]):
        assert int(bar.attrs["data-group"]) == group["index"]
        assert (int(bar.attrs["data-channels"]), int(bar.attrs["data-kept"])) == (group["channels"], group["kept"])
        label = bar.find_all("text", "bar-label")[0].text
        first = group["members"][0]["tensor"]
        assert label.startswith(f"#{group['index']} ") and first.endswith(label.split(" ", 1)[1].lstrip("\u2026"))
        heights = {next(iter(r.classes() - {"seg"})): float(r.attrs["height"]) for r in bar.find_all("rect")}
        if group["pinned_reason"]:
            assert set(heights) == {"seg-pinned"} and bar.attrs["data-state"] == "pinned"
        else:
            assert set(heights) == {"seg-kept", "seg-removed"}
            assert heights["seg-kept"] / sum(heights.values()) == pytest.approx(group["kept"] / group["channels"], abs=1e-3)
        px_per_channel.append(sum(heights.values()) / group["channels"])
    assert max(px_per_channel) == pytest.approx(min(px_per_channel), rel=1e-3)  # one scale for every bar
    assert any(h["kept"] < h["channels"] for h in report["groups"]), "the run should have pruned something"

    pinned = [g for g in report["groups"] if g["pinned_reason"]]
    assert pinned and table_rows(dom.find_all("table", "pinned")[0])[1:] == [
        [str(g["index"]), str(g["channels"]), g["members"][0]["tensor"], g["pinned_reason"]] for g in pinned]


def test_sensitivity_curves_and_latency(cli_run, chromium, tmp_path):
    report, html = cli_run
    dom = dump_dom(chromium, html, tmp_path)
    # every candidate the run validated (scan and search) is a point of the trade-off, the chosen one marked
    tradeoff = dom.by_id("chart-tradeoff")
    points = tradeoff.find_all("circle", "point")
    assert len(points) == len(report["tradeoff"]) > 3
    assert sum(1 for r in report["tradeoff"] if r["chosen"]) == 1 == len(tradeoff.find_all("text", "chosen-label"))
    assert sorted(float(c.attrs["data-x"]) for c in points) == pytest.approx(
        sorted(r["macs_fraction"] for r in report["tradeoff"]), abs=1e-3)
    chart = dom.by_id("chart-sensitivity")
    assert chart is not None and chart.find_all("title")[0].text.startswith("Sensitivity")
    rows = report["sensitivity"]
    series = chart.find_all("g", "series")
    assert {s.attrs["data-name"] for s in series} == {f"group {r['group']}" for r in rows}
    points = sorted((float(c.attrs["data-x"]), float(c.attrs["data-y"])) for c in chart.find_all("circle", "point"))
    assert points == sorted((r["ratio"], r["error"]) for r in rows) and len(points) > 3
    assert all(len(s.find_all("polyline")) == 1 for s in series if len(s.find_all("circle")) > 1)

    latency = report["latency"]
    cells = table_rows(dom.find_all("table", "latency")[0])
    assert cells[1] == ["original", f"{latency['original']['median_ms']:.4g}", f"{latency['original']['p90_ms']:.4g}"]
    assert cells[2] == ["pruned", f"{latency['pruned']['median_ms']:.4g}", f"{latency['pruned']['p90_ms']:.4g}"]
    settings = table_rows(dom.find_all("table", "latency-settings")[0])[1]
    assert settings == [f"{latency['speedup']:.2f}x", str(latency["runs"]), str(latency["threads"]),
                        str(latency["batch"]), "CPUExecutionProvider"]
    bars = dom.by_id("chart-latency").find_all("g", "bar")
    assert [b.attrs["data-model"] for b in bars] == ["original", "pruned"]
    heights = [float(b.find_all("rect")[0].attrs["height"]) for b in bars]
    assert heights[0] / heights[1] == pytest.approx(latency["speedup"], rel=1e-3)


def test_tradeoff_charts_mark_the_chosen_point(cli_run, tradeoff, chromium, tmp_path):
    report, _ = cli_run
    dom = dump_dom(chromium, render_html({**report, "tradeoff": tradeoff}), tmp_path)
    assert dom.by_id("chart-sensitivity") is not None  # the run had --sensitivity: both charts are shown
    by_macs, by_latency = dom.by_id("chart-tradeoff"), dom.by_id("chart-tradeoff-latency")
    assert "cosine <similarity> vs MACs fraction" == by_macs.find_all("title")[0].text
    circles = by_macs.find_all("circle", "point")
    assert sorted(float(c.attrs["data-x"]) for c in circles) == sorted(r["macs_fraction"] for r in tradeoff)
    chosen = [c for c in circles if "chosen" in c.classes()]
    assert len(chosen) == 1 and float(chosen[0].attrs["data-x"]) == tradeoff[0]["macs_fraction"]
    assert float(chosen[0].attrs["data-y"]) == tradeoff[0]["metric"] and float(chosen[0].attrs["r"]) > float(
        next(c for c in circles if c is not chosen[0]).attrs["r"])
    # the latency chart only has the points whose latency was measured
    latency_points = by_latency.find_all("circle", "point")
    assert sorted(float(c.attrs["data-x"]) for c in latency_points) == sorted(
        r["latency_fraction"] for r in tradeoff if r["latency_fraction"] is not None)
    assert len(latency_points) == 2 and len(by_latency.find_all("circle", "chosen")) == 1
    table = table_rows(dom.find_all("table", "tradeoff")[0])
    assert [r[0] for r in table[1:]] == [r["label"] for r in tradeoff] and table[1][-1] == "yes"


def test_screenshot_paints_the_charts(cli_run, chromium, tmp_path):
    report, html = cli_run
    page, shot = tmp_path / "report.html", tmp_path / "shot.png"
    page.write_text(html, encoding="utf-8")
    _chromium(chromium, page, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1200,2000")
    data = shot.read_bytes()
    assert len(data) > 30_000
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1200, 2000)
    pixels = png_pixels(data)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # text, tables and charts, not a blank page
    # the removed (salmon) segments are painted with the area the DOM gives them, plus the 12x12 legend swatch
    dom = dump_dom(chromium, html, tmp_path)
    removed = dom.by_id("chart-channels").find_all("rect", "seg-removed")
    area = sum(float(r.attrs["width"]) * float(r.attrs["height"]) for r in removed) + 12 * 12
    painted = int((pixels == REMOVED).all(axis=-1).sum())
    assert area > 200 and 0.8 * area <= painted <= 1.2 * area
    assert (pixels == KEPT).all(axis=-1).sum() > 2000 and (pixels == PINNED).all(axis=-1).sum() > 144


def test_tensor_names_are_escaped(chromium, tmp_path):
    model = onnx.load(RESNET)
    old = "/stem/stem.0/Conv_output_0"
    for node in model.graph.node:
        node.input[:] = [EVIL if n == old else n for n in node.input]
        node.output[:] = [EVIL if n == old else n for n in node.output]
    for info in model.graph.value_info:
        if info.name == old:
            info.name = EVIL
    result = onnxprune.prune(model, ratio=0.5)
    assert any(m["tensor"] == EVIL for g in result.report["groups"] for m in g["members"])
    html = render_html(result.report)
    assert EVIL not in html and "<script" not in html and "<img" not in html
    dom = dump_dom(chromium, html, tmp_path)
    assert not dom.find_all("script") and not dom.find_all("img")
    bar = next(b for b in dom.by_id("chart-channels").find_all("g", "bar") if EVIL in b.find_all("title")[0].text)
    assert EVIL.endswith(bar.find_all("text", "bar-label")[0].text.split("\u2026", 1)[1])  # the shortened label
    assert any(EVIL in row[-1] for row in table_rows(dom.find_all("table", "groups")[0]))
    # no sensitivity, no target, no latency: the page says what is missing instead of drawing empty charts
    assert dom.by_id("chart-tradeoff") is None and dom.by_id("chart-sensitivity") is None
    assert dom.by_id("chart-latency") is None
    body = " ".join(dom.find_all("body")[0].text.split())
    assert "needs --sensitivity or a target" in body and "Latency was not measured (--no-latency)" in body


def test_calibration_compensation_and_notes_are_shown(chromium, tmp_path):
    result = onnxprune.prune(str(MODELS / "resnet.ts.onnx"), ratio=0.5, calib=str(MODELS / "calib_images"))
    report = {**result.report, "notes": ["a note with <b>markup</b>"]}
    dom = dump_dom(chromium, render_html(report), tmp_path)
    rows = table_rows(dom.find_all("table", "compensation")[0])[1:]
    assert [r[:2] for r in rows] == [[c["node"], c["method"]] for c in report["compensation"]] and rows
    body = " ".join(dom.find_all("body")[0].text.split())
    assert report["calibration"]["calibration"] in body and "a note with <b>markup</b>" in body


def test_channels_that_stay_in_a_prunable_group_are_drawn_and_explained(chromium, tmp_path):
    # A Concat of the model input with features: the input's 3 channels stay, the features prune.
    first, inits1 = conv("conv1", "x", "a", 3, 8, seed=1)
    last, inits2 = conv("conv2", "m", "y", 11, 4, seed=2)
    concat = onnx.helper.make_node("Concat", ["a", "x"], ["m"], axis=1)
    result = onnxprune.prune(make_model([first, concat, last], {"x": ["N", 3, 8, 8]}, ["y"], inits1 + inits2),
                             ratio=0.5, round_to=1)
    dom = dump_dom(chromium, render_html(result.report), tmp_path)
    titles = [b.find_all("title")[0].text for b in dom.by_id("chart-channels").find_all("g", "bar")]
    title = next(t for t in titles if t.startswith("group 0 "))
    assert "4 of 8 channels kept, and 3 more that stay: " in title and "is a model input" in title
