"""The readable text of a page: what a person reads, not menus, scripts or footers.

Block elements become line breaks so that a paragraph, a heading or a list item is never glued to the next
one; the sentence splitter treats every line break as the end of a sentence.
"""

from __future__ import annotations

from dataclasses import dataclass

from bs4 import BeautifulSoup

# Page furniture and code, never the content.
DROPPED_TAGS = ["script", "style", "nav", "header", "footer", "aside", "noscript", "template", "svg", "head"]
BLOCK_TAGS = ["address", "article", "blockquote", "caption", "dd", "details", "div", "dl", "dt", "figcaption",
              "figure", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "li", "main", "ol", "p", "pre", "section",
              "summary", "table", "td", "th", "tr", "ul"]


class NoText(ValueError):
    """The page has no readable text."""


@dataclass(frozen=True)
class PageText:
    title: str | None
    text: str
    truncated: bool  # the text was cut at `max_chars`


def _decode(body: bytes, charset: str | None) -> str:
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return body.decode("utf-8", errors="replace")


def _html_text(body: bytes, charset: str | None) -> tuple[str | None, str]:
    soup = BeautifulSoup(body, "html.parser", from_encoding=charset)
    title = " ".join(soup.title.get_text().split()) if soup.title else ""
    for tag in soup.find_all(DROPPED_TAGS):
        tag.decompose()
    for br in soup.find_all("br"):
        br.replace_with("\n")
    for block in soup.find_all(BLOCK_TAGS):
        block.insert_before("\n")
        block.insert_after("\n")
    return title or None, soup.get_text()


def extract_text(body: bytes, media_type: str, charset: str | None, *, max_chars: int) -> PageText:
    """The title (HTML only) and the text, one paragraph per line, cut on a word at `max_chars`."""
    if media_type == "text/html":
        title, raw = _html_text(body, charset)
    else:
        title, raw = None, _decode(body, charset)
    text = "\n".join(line for line in (" ".join(raw_line.split()) for raw_line in raw.splitlines()) if line)
    if not text:
        raise NoText("the page has no readable text")
    truncated = len(text) > max_chars
    if truncated:
        head = text[:max_chars]
        space = max(head.rfind(" "), head.rfind("\n"))
        if not text[max_chars].isspace() and space > 0:  # do not end on half a word
            head = head[:space]
        text = head.rstrip()
    return PageText(title=title, text=text, truncated=truncated)
