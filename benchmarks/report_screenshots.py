"""Screenshots of the HTML report in a real headless browser at desktop and phone width, with
checks that the page reads there.

Renders the report of a run folder (``DIR``; without it, runs the toy suite at a small sample
count into a temporary folder first), opens it in Chromium at 1400 and 390 CSS pixels wide and

- fails on any console error, page error or request for something outside the file (the
  report must be self-contained);
- checks that the page does not scroll sideways, that every table sits in a horizontally
  scrollable box no wider than the viewport, and that scrolling that box reaches the table's
  last column;
- checks that every image loaded and fits the viewport, and measures how large the plots' tick
  labels are on screen (CSS pixels; at least MIN_PLOT_TEXT_PX) and the smallest text on the page;
- writes a full-page screenshot per width (``report-desktop.png``, ``report-phone.png``), cut to
  CROP_HEIGHTS (or ``--max-height``) CSS pixels and quantised to 256 colours to stay small.

    python benchmarks/report_screenshots.py --out docs/images            # toy suite, 500 samples
    python benchmarks/report_screenshots.py reports/toy --out /tmp/shots  # an existing run

Needs Chromium (Debian: ``apt-get install chromium``; ``--chromium`` for another binary) and the
``playwright`` Python package, used only as a driver for that binary (no browser download).
Exit status: 0 when every check passes, 1 otherwise (screenshots are written either way).
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageColor

from cmbench.report import render_report
from cmbench.report.layout import layout_problems
from cmbench.report.plots import COLORS, DPI, TICK_SIZE

WIDTHS = {"desktop": 1400, "phone": 390}
CROP_HEIGHTS = {"desktop": 4000, "phone": 6000}
"""Default screenshot heights (CSS px from the top): the header, the tables and the first plots at
each width (a phone page is about 1.6 times as long), each PNG under 300 KB."""
VIEWPORT_HEIGHT = 900
MIN_PLOT_TEXT_PX = 11.0
MIN_TEXT_PX = 10.0
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]

# Runs in the page; returns what the checks need. Every table: its box's overflow-x and edges, and
# the right edge of its last header cell once the box is scrolled fully right.
MEASURE_JS = """
() => {
  const viewport = document.documentElement.clientWidth;
  const tables = [...document.querySelectorAll('table')].map((table, index) => {
    const box = table.closest('.table-scroll');
    if (!box) return {index, boxed: false};
    const overflow = getComputedStyle(box).overflowX;
    box.scrollLeft = box.scrollWidth;
    const cells = table.rows[0].cells;
    const lastRight = cells[cells.length - 1].getBoundingClientRect().right;
    const boxRect = box.getBoundingClientRect();
    box.scrollLeft = 0;
    return {index, boxed: true, overflow, boxLeft: boxRect.left, boxRight: boxRect.right,
            boxClient: box.clientWidth, tableWidth: table.scrollWidth, lastRight,
            scrolls: table.scrollWidth > box.clientWidth};
  });
  const images = [...document.images].map(img => ({
    alt: img.alt.slice(0, 60), loaded: img.complete && img.naturalWidth > 0,
    shown: img.getBoundingClientRect().width, natural: img.naturalWidth,
    plot: !!img.closest('#trade-offs')}));
  let smallest = Infinity, smallestText = '';
  for (const el of document.body.querySelectorAll('*')) {
    const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    if (!own || el.getClientRects().length === 0) continue;
    const size = parseFloat(getComputedStyle(el).fontSize);
    if (size < smallest) { smallest = size; smallestText = el.textContent.trim().slice(0, 40); }
  }
  return {viewport, pageWidth: document.documentElement.scrollWidth, pageHeight: document.documentElement.scrollHeight,
          tables, images, smallest, smallestText};
}
"""


@dataclass
class WidthResult:
    """What one width showed: the problems found, the numbers measured and the screenshot written."""

    name: str
    width: int
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    screenshot: Path | None = None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="cmbench-report-shots-"))
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cmbench-report-run-") as scratch:
        run_dir = args.dir or run_toy(Path(scratch) / "toy", args.samples)
        report = render_report(run_dir)
        html = report.read_text(encoding="utf-8")
        static = layout_problems(html)
        print(f"report: {report} ({len(html.encode()) / 1024:.0f} KiB)" + ("" if args.dir else ", removed at exit"))
        results = browse(report, out, args)
    failed = bool(static) or any(r.problems for r in results)
    for problem in static:
        print(f"FAIL (HTML): {problem}")
    for result in results:
        print(f"{result.name} ({result.width} px): {result.screenshot} "
              f"({result.screenshot.stat().st_size / 1024:.0f} KiB)" if result.screenshot else f"{result.name}: no screenshot")
        for note in result.notes:
            print(f"  {note}")
        for problem in result.problems:
            print(f"  FAIL: {problem}")
    print(f"screenshots in {out.resolve()}")
    print("FAILED" if failed else "all checks passed")
    return 1 if failed else 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", nargs="?", type=Path, help="run folder to render (default: run the toy suite)")
    parser.add_argument("--out", type=Path, help="folder for the screenshots (default: a new temporary folder)")
    parser.add_argument("--samples", type=int, default=500, help="num_samples of the toy run (default 500)")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium binary (default /usr/bin/chromium)")
    parser.add_argument("--max-height", type=int,
                        help="cut each screenshot to this many CSS pixels from the top (0: the whole page; "
                             f"default {', '.join(f'{k} {v}' for k, v in CROP_HEIGHTS.items())})")
    return parser.parse_args(argv)


def run_toy(out: Path, samples: int) -> Path:
    """The toy suite at ``samples`` samples per row, run in a child process into ``out``."""
    command = [sys.executable, "-m", "cmbench", "run", "toy", "--out", str(out), "--quiet",
               "--set", f"num_samples={samples}"]
    print("running:", " ".join(command[1:]))
    subprocess.run(command, check=True)
    return out


def browse(report: Path, out: Path, args: argparse.Namespace) -> list[WidthResult]:
    """Open ``report`` at each of WIDTHS in one fresh Chromium profile; check and screenshot."""
    from playwright.sync_api import sync_playwright

    results = []
    with sync_playwright() as driver, tempfile.TemporaryDirectory(prefix="cmbench-chromium-") as profile:
        context = driver.chromium.launch_persistent_context(
            profile, executable_path=args.chromium, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": WIDTHS["desktop"], "height": VIEWPORT_HEIGHT}, device_scale_factor=1)
        try:
            for name, width in WIDTHS.items():
                height = CROP_HEIGHTS[name] if args.max_height is None else args.max_height
                results.append(check_width(context, report, out, name, width, height))
        finally:
            context.close()
    return results


def check_width(context, report: Path, out: Path, name: str, width: int, max_height: int) -> WidthResult:
    result = WidthResult(name, width)
    page = context.new_page()
    page.set_viewport_size({"width": width, "height": VIEWPORT_HEIGHT})
    page.on("console", lambda message: message.type == "error" and result.problems.append(f"console error: {message.text}"))
    page.on("pageerror", lambda error: result.problems.append(f"page error: {error}"))
    page.on("request", lambda request: request.url.startswith(("file:", "data:"))
            or result.problems.append(f"request outside the file: {request.url}"))
    page.goto(report.resolve().as_uri(), wait_until="load")
    measured = page.evaluate(MEASURE_JS)
    result.problems += measurement_problems(measured)
    result.notes += measurement_notes(measured)
    png = page.screenshot(full_page=True)
    page.close()
    result.screenshot = out / f"report-{name}.png"
    result.screenshot.write_bytes(small_png(png, max_height))
    return result


def measurement_problems(m: dict) -> list[str]:
    """The failed checks among the page's measurements (see MEASURE_JS)."""
    viewport, problems = m["viewport"], []
    if m["pageWidth"] > viewport:
        problems.append(f"the page scrolls sideways: {m['pageWidth']} px wide in a {viewport} px viewport")
    for t in m["tables"]:
        if not t["boxed"]:
            problems.append(f"table {t['index']} has no scroll box")
            continue
        if t["overflow"] not in ("auto", "scroll"):
            problems.append(f"table {t['index']}: its box has overflow-x {t['overflow']}")
        if t["boxLeft"] < 0 or t["boxRight"] > viewport + 0.5:
            problems.append(f"table {t['index']}: its box spans {t['boxLeft']:.0f}–{t['boxRight']:.0f} px, "
                            f"outside the {viewport} px viewport")
        if t["lastRight"] > t["boxRight"] + 0.5:
            problems.append(f"table {t['index']}: its last column ends at {t['lastRight']:.0f} px, beyond its box "
                            f"({t['boxRight']:.0f} px) even scrolled fully right")
    for image in m["images"]:
        if not image["loaded"]:
            problems.append(f"image did not load: {image['alt']!r}")
        elif image["shown"] > viewport:
            problems.append(f"image {image['alt']!r} is {image['shown']:.0f} px wide in a {viewport} px viewport")
    smallest_plot_text = plot_text_px(m)
    if smallest_plot_text is not None and smallest_plot_text < MIN_PLOT_TEXT_PX:
        problems.append(f"plot tick labels are {smallest_plot_text:.1f} CSS px on screen (< {MIN_PLOT_TEXT_PX})")
    if m["smallest"] < MIN_TEXT_PX:
        problems.append(f"text of {m['smallest']:.1f} px (< {MIN_TEXT_PX}): {m['smallestText']!r}")
    return problems


def measurement_notes(m: dict) -> list[str]:
    scrolling = sum(t.get("scrolls", False) for t in m["tables"])
    plot_px = plot_text_px(m)
    return [f"page {m['pageWidth']} x {m['pageHeight']} px; {len(m['tables'])} tables ({scrolling} scroll sideways "
            f"in their box); {len(m['images'])} images",
            f"smallest page text {m['smallest']:.1f} px ({m['smallestText']!r}); plot tick labels "
            + (f"{plot_px:.1f} px on screen" if plot_px is not None else "(no plots)")]


def plot_text_px(m: dict) -> float | None:
    """On-screen size (CSS px) of the plots' tick labels in the most shrunken plot: their size in
    the image (TICK_SIZE points at DPI) times the image's display scale."""
    scales = [image["shown"] / image["natural"] for image in m["images"] if image["plot"] and image["loaded"]]
    return min(scales) * TICK_SIZE * DPI / 72 if scales else None


def small_png(png: bytes, max_height: int) -> bytes:
    """The screenshot cut to ``max_height`` pixels (0: whole) and quantised to 256 colours: a
    median-cut palette of the page plus the plots' series colours exactly (median cut alone
    shifts a thin orange line to salmon)."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    if max_height and image.height > max_height:
        image = image.crop((0, 0, image.width, max_height))
    page_colours = image.quantize(colors=256 - len(COLORS), method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    palette = Image.new("P", (1, 1))
    palette.putpalette(page_colours.getpalette()[: 3 * (256 - len(COLORS))]
                       + [channel for colour in COLORS for channel in ImageColor.getrgb(colour)])
    buffer = io.BytesIO()
    image.quantize(palette=palette, dither=Image.Dither.NONE).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


if __name__ == "__main__":
    sys.exit(main())
