"""Put the pixel and the click URLs into outgoing mail without disturbing the rest of it.

Email HTML is fragile: Outlook reads conditional comments (`<!--[if mso]>`), templates rely on
the doctype, on entities and on attribute quoting exactly as written. So the document is never
re-serialised. The standard library's HTML tokenizer (`html.parser`) reports where each start
tag begins in the source (selectolax and lxml build a tree but do not say where a node came
from); we read each tag's attributes with a small tokenizer that follows the HTML attribute
rules, and splice new `href` values into the original string. Everything else stays
byte-for-byte as it was.

Kept as they are: `mailto:`, `tel:` and any other non-http(s) scheme, `#anchors`, template
placeholders, relative links when there is no `<base href>` (they cannot work in a mail reader
anyway), and links marked to be left alone with a `data-notrack` attribute or a `notrack`
class (`<a href="..." data-notrack>`). A relative link under `<base href>` is resolved against
it and tracked. Links inside Outlook conditional comments (VML buttons: `<v:roundrect href>`)
are tracked too. Our own click URLs (quoted replies of earlier tracked mail) are unwrapped and
signed afresh for this message, and our own pixels are removed, so reading a reply never marks
the quoted message read.
"""

from __future__ import annotations

import functools
import html
import re
import uuid
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

from tracking.engagement import tokens

_WHITESPACE = " \t\n\r\f"
_TRACKED_SCHEMES = {"http", "https"}
_URL_NOISE = str.maketrans("", "", "\t\n\r")
_NOTRACK_ATTRIBUTE = "data-notrack"
_NOTRACK_CLASS = "notrack"
# Outlook's VML shapes (bulletproof buttons) carry links too, inside `<!--[if mso]>`.
_LINK_TAGS = {"a", "area"}
_VML_PREFIX = "v:"

PIXEL_TEMPLATE = (
    '<img src="{src}" width="1" height="1" alt="" border="0" style="height:1px !important;'
    "width:1px !important;border-width:0 !important;margin:0 !important;"
    'padding:0 !important;display:block" />'
)


@dataclass(frozen=True)
class _Attribute:
    name: str  # lower-cased
    value: str  # entities decoded
    value_start: int  # span of the raw value (without its quotes) inside the tag text
    value_end: int
    quote: str  # '"' or "'"; "" for an unquoted value or none


@dataclass(frozen=True)
class _StartTag:
    offset: int
    name: str
    text: str


@dataclass(frozen=True)
class _Edit:
    start: int
    end: int
    text: str


def html_add_tracking(html_text: str, *, message_id: uuid.UUID | str) -> str:
    """Return `html_text` with every trackable link a click URL and a pixel at the body's end."""
    if not html_text.strip():
        return html_text
    scan = _scan(html_text)
    base = _base_href(scan.tags)
    edits = _link_edits(html_text, scan, message_id=message_id, base=base)
    pixel = PIXEL_TEMPLATE.format(src=html.escape(tokens.open_url(message_id)))
    edits.append(_Edit(scan.pixel_offset, scan.pixel_offset, pixel))
    return _apply(html_text, edits)


_TEXT_URL = re.compile(r"https?://[^\s<>\"'\[\]{}|\\^`]+", re.IGNORECASE)
_TRAILING_PUNCTUATION = ".,;:!?)'\""


def text_add_tracking(text: str, *, message_id: uuid.UUID | str) -> str:
    """Return a plain-text part with its bare http(s) URLs turned into click URLs.

    Plain text is not HTML, so a pattern is the right tool here. Punctuation that ends a
    sentence is not taken as part of the URL. Off by default (TRACKING_TEXT_LINKS): click URLs
    are long and a text reader shows them as they are.
    """

    def replace(match: re.Match[str]) -> str:
        url = match.group(0)
        stripped = url.rstrip(_TRAILING_PUNCTUATION)
        # Keep a closing parenthesis that belongs to the URL, as in Wikipedia links.
        while stripped.count("(") > stripped.count(")") and len(stripped) < len(url):
            stripped = url[: len(stripped) + 1]
        tail = url[len(stripped) :]
        unwrapped = tokens.click_url_target(stripped)
        target = unwrapped.url if unwrapped else stripped
        return tokens.click_url(message_id, target) + tail

    return _TEXT_URL.sub(replace, text)


# --- scanning -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scan:
    tags: tuple[_StartTag, ...]
    conditional_comments: tuple[tuple[int, int], ...]  # spans of the HTML inside `<!--[if ...]>`
    pixel_offset: int


class _Scanner(HTMLParser):
    """Collects start tags, the end of the body and Outlook conditional comments, with their
    offsets in the source."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=False)
        self.source = source
        self.line_starts = [0]
        newline = source.find("\n")
        while newline >= 0:
            self.line_starts.append(newline + 1)
            newline = source.find("\n", newline + 1)
        self.tags: list[_StartTag] = []
        self.conditional_comments: list[tuple[int, int]] = []
        self.body_end: int | None = None
        self.html_end: int | None = None

    def _offset(self) -> int:
        line, column = self.getpos()
        return self.line_starts[line - 1] + column

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(_StartTag(self._offset(), tag, self.get_starttag_text() or ""))

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag == "body":
            self.body_end = self._offset()
        elif tag == "html":
            self.html_end = self._offset()

    def handle_comment(self, data: str) -> None:
        # `<!--[if mso]>...<![endif]-->`: the HTML between `]>` and `<![endif]` is what
        # Outlook renders. (`<!--[if !mso]><!-->` has nothing inside and is skipped.)
        if not data.lstrip().lower().startswith("[if"):
            return
        opened, closed = data.find("]>"), data.lower().rfind("<![endif]")
        if opened < 0 or closed <= opened + 2:
            return
        start = self._offset() + len("<!--")
        self.conditional_comments.append((start + opened + 2, start + closed))


# A campaign sends one HTML to many recipients: tokenizing it was a third of building each.
# Only documents of ordinary size are kept, so the cache holds a few MB at most, whatever is sent.
SCAN_CACHE_MAX_CHARS = 512 * 1024


def _scan(source: str) -> _Scan:
    if len(source) > SCAN_CACHE_MAX_CHARS:
        return _scan_uncached(source)
    return _scan_cached(source)


def _scan_uncached(source: str) -> _Scan:
    scanner = _Scanner(source)
    scanner.feed(source)
    scanner.close()
    pixel_offset = next(
        (o for o in (scanner.body_end, scanner.html_end) if o is not None), len(source)
    )
    return _Scan(tuple(scanner.tags), tuple(scanner.conditional_comments), pixel_offset)


_scan_cached = functools.lru_cache(maxsize=8)(_scan_uncached)


def _base_href(tags: tuple[_StartTag, ...]) -> str | None:
    """The document's base URL: the first `<base href>` (HTML's rule), if absolute http(s)."""
    for tag in tags:
        if tag.name == "base":
            href = _attribute(_attributes(tag.text), "href")
            if href is not None:
                url = href.value.strip()
                return url if urlsplit(url).scheme.lower() in _TRACKED_SCHEMES else None
    return None


def _link_edits(
    source: str, scan: _Scan, *, message_id: uuid.UUID | str, base: str | None
) -> list[_Edit]:
    edits = []
    for tag in scan.tags:
        edit = _tag_edit(tag, message_id=message_id, base=base, vml=False)
        if edit:
            edits.append(edit)
    for start, end in scan.conditional_comments:
        # Outlook-only HTML is parsed on its own; its offsets are shifted back into place.
        inner = _scan(source[start:end])
        for tag in inner.tags:
            moved = _StartTag(tag.offset + start, tag.name, tag.text)
            edit = _tag_edit(moved, message_id=message_id, base=base, vml=True)
            if edit:
                edits.append(edit)
    return edits


def _tag_edit(
    tag: _StartTag, *, message_id: uuid.UUID | str, base: str | None, vml: bool
) -> _Edit | None:
    is_link = tag.name in _LINK_TAGS or (vml and tag.name.startswith(_VML_PREFIX))
    if tag.name == "img":
        src = _attribute(_attributes(tag.text), "src")
        if src is not None and tokens.is_open_url(src.value.strip()):
            return _Edit(tag.offset, tag.offset + len(tag.text), "")
        return None
    if not is_link:
        return None
    attributes = _attributes(tag.text)
    href = _attribute(attributes, "href")
    if href is None or _is_marked_notrack(attributes):
        return None
    target = _tracked_target(href.value, base)
    if target is None:
        return None
    value = html.escape(tokens.click_url(message_id, target))
    return _Edit(tag.offset + href.value_start, tag.offset + href.value_end, value)


def _tracked_target(href: str, base: str | None) -> str | None:
    """The URL a click on `href` should lead to, or None to leave the link alone."""
    # As browsers read a URL: no surrounding whitespace, no tab or line break anywhere (and a
    # line break could never go into the redirect's Location header).
    url = href.strip(_WHITESPACE).translate(_URL_NOISE)
    if not url or url.startswith("#"):
        return None
    ours = tokens.click_url_target(url)
    if ours is not None:
        return ours.url
    scheme = urlsplit(url).scheme.lower()
    if scheme in _TRACKED_SCHEMES:
        return url
    if not scheme and base:
        resolved = urljoin(base, url)
        return resolved if urlsplit(resolved).scheme.lower() in _TRACKED_SCHEMES else None
    return None


def _is_marked_notrack(attributes: list[_Attribute]) -> bool:
    if _attribute(attributes, _NOTRACK_ATTRIBUTE) is not None:
        return True
    classes = _attribute(attributes, "class")
    return classes is not None and _NOTRACK_CLASS in classes.value.lower().split()


def _apply(source: str, edits: list[_Edit]) -> str:
    pieces, position = [], 0
    for edit in sorted(edits, key=lambda e: (e.start, e.end)):
        pieces.append(source[position : edit.start])
        pieces.append(edit.text)
        position = edit.end
    pieces.append(source[position:])
    return "".join(pieces)


# --- attributes of one start tag --------------------------------------------------------------


def _attribute(attributes: list[_Attribute], name: str) -> _Attribute | None:
    # HTML keeps the first of duplicated attributes.
    return next((a for a in attributes if a.name == name), None)


def _attributes(tag_text: str) -> list[_Attribute]:
    """The attributes of a raw start tag (`<a class=x href="...">`), with the source span of
    each value, read the way the HTML tokenizer's attribute states read them."""
    attributes: list[_Attribute] = []
    length = len(tag_text)
    position = 1
    while position < length and tag_text[position] not in _WHITESPACE + "/>":
        position += 1  # the tag name
    while position < length:
        while position < length and tag_text[position] in _WHITESPACE + "/":
            position += 1
        if position >= length or tag_text[position] == ">":
            break
        name_start = position
        position += 1  # a name may begin with "=" (HTML's "unexpected equals sign")
        while position < length and tag_text[position] not in _WHITESPACE + "/>=":
            position += 1
        name = tag_text[name_start:position].lower()
        after_name = position
        while position < length and tag_text[position] in _WHITESPACE:
            position += 1
        if position >= length or tag_text[position] != "=":
            attributes.append(_Attribute(name, "", after_name, after_name, ""))
            position = after_name
            continue
        position += 1
        while position < length and tag_text[position] in _WHITESPACE:
            position += 1
        quote = tag_text[position] if position < length and tag_text[position] in "\"'" else ""
        if quote:
            value_start = position + 1
            value_end = tag_text.find(quote, value_start)
            value_end = length if value_end < 0 else value_end
            position = value_end + 1
        else:
            value_start = position
            while position < length and tag_text[position] not in _WHITESPACE + ">":
                position += 1
            value_end = position
        raw = tag_text[value_start:value_end]
        attributes.append(_Attribute(name, html.unescape(raw), value_start, value_end, quote))
    return attributes
