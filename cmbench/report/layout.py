"""Static checks of a rendered report's responsive structure, without a browser.

The report must read on a phone (390 CSS pixels wide): the viewport meta tag tells mobile
browsers not to lay it out at desktop width, every table sits in its own horizontally scrollable
box (so a wide table scrolls instead of widening the page or being cut off), and images never
exceed their container. :func:`layout_problems` finds the HTML and CSS that promise this; the
benchmark ``benchmarks/report_screenshots.py`` then measures it in a real browser.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

SCROLL_BOX_CLASS = "table-scroll"
VIEWPORT_CONTENT = "width=device-width"


def layout_problems(html: str) -> list[str]:
    """What in ``html`` breaks the responsive layout's promises (empty when nothing does)."""
    parser = _LayoutParser()
    parser.feed(html)
    problems = [f"table #{index} is not inside a div.{SCROLL_BOX_CLASS}" for index in parser.unboxed_tables]
    if not parser.viewport_ok:
        problems.append(f'no <meta name="viewport" content="{VIEWPORT_CONTENT}, ...">')
    css = "\n".join(parser.styles)
    if not _rule_has(css, rf"\.{SCROLL_BOX_CLASS}", r"overflow-x\s*:\s*(auto|scroll)"):
        problems.append(f".{SCROLL_BOX_CLASS} has no overflow-x: auto")
    if not _rule_has(css, r"(^|[\s,}])img", r"max-width\s*:\s*100%"):
        problems.append("img has no max-width: 100%")
    return problems


def _rule_has(css: str, selector: str, declaration: str) -> bool:
    """Whether a CSS rule whose selector list matches ``selector`` declares ``declaration``."""
    for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", css):
        if any(re.fullmatch(rf"\s*{selector}\s*", s) for s in selectors.split(",")) and re.search(declaration, body):
            return True
    return False


class _LayoutParser(HTMLParser):
    """Collects the tables outside scroll boxes, the viewport meta tag and the inline CSS."""

    def __init__(self) -> None:
        super().__init__()
        self.open_divs: list[bool] = []  # per open <div>: whether it is a scroll box
        self.tables = 0
        self.unboxed_tables: list[int] = []
        self.viewport_ok = False
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "div":
            self.open_divs.append(SCROLL_BOX_CLASS in (attributes.get("class") or "").split())
        elif tag == "table":
            if not any(self.open_divs):
                self.unboxed_tables.append(self.tables)
            self.tables += 1
        elif tag == "meta" and attributes.get("name") == "viewport":
            self.viewport_ok = VIEWPORT_CONTENT in (attributes.get("content") or "")
        elif tag == "style":
            self._in_style = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "div" and self.open_divs:
            self.open_divs.pop()
        elif tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)
