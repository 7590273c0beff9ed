"""Turn a message's markdown source into the safe HTML clients display.

Pure functions only: no app, no I/O. The monolith calls `render_html` when a
message is created or edited; link previews are added later by `links.py`.

Rendering must stay fast for any message a client may send (at most
`monolith.models.SOURCE_MAX` characters): `bench/render_worst.py` measures
the worst shapes found. Hence markdown-it (CommonMark, built to stay linear
on pathological input; Python-Markdown took seconds on ``"[" * 4000``) and a
URL pattern whose every repetition is bounded (see `_URL_RE`).
"""

import re
from functools import partial

from bleach.callbacks import nofollow
from bleach.html5lib_shim import allowed_protocols
from bleach.linkifier import TLDS, LinkifyFilter
from bleach.sanitizer import Cleaner
from markdown_it import MarkdownIt

# Inline formatting only: a chat message is one line of text, so block tags
# (p, h1, ul, blockquote, img...) are stripped and only their text is kept.
ALLOWED_TAGS = frozenset({"a", "abbr", "acronym", "b", "code", "em", "i", "strong"})
ALLOWED_ATTRIBUTES = {
    "a": ["href", "title", "rel"],
    "abbr": ["title"],
    "acronym": ["title"],
}
# Anything else (javascript:, data:, vbscript:) loses its href.
ALLOWED_PROTOCOLS = frozenset({"http", "https", "mailto"})

# bleach only linkifies names with a known TLD; in development people link
# local pages (http://localhost:5000/, http://127.0.0.1:8000/x), so an explicit
# http(s) URL to localhost or an IP address is linkified too.
_LOCAL_URL = (
    r"\bhttps?://(?:localhost|\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-f:.]{1,64}\])(?::[0-9]{1,5})?"
    r"(?:[/?][^\s\{\}\|\\\^`<>\"]*)?"
)
# bleach's own pattern (bleach.linkifier.build_url_re), with what made it
# quadratic taken out: it tried a run of "(" from every position (640 ms for
# 8000 of them) and unbounded label repetitions from every word boundary
# ("a-" * 2048: 111 ms). Opening parentheses are left to bleach's own
# strip_non_url_bits, as before; labels are at most 63 characters (as in DNS)
# and a name has at most 16 of them.
_BLEACH_URL = r"""
    \b(?<![@.])(?:(?:{protocols}):/{{0,3}}(?:(?:\w{{1,64}}:)?\w{{1,64}}@)?)?  # http://
    (?:[\w-]{{1,63}}\.){{1,16}}(?:{tlds})(?::[0-9]{{1,5}})?(?!\.\w)\b      # xx.yy.tld(:##)?
    (?:[/?][^\s\{{\}}\|\\\^`<>"]*)?                                      # /path?query
""".format(protocols="|".join(sorted(allowed_protocols)), tlds="|".join(sorted(TLDS)))
_URL_RE = re.compile(_LOCAL_URL + "|" + _BLEACH_URL, re.IGNORECASE | re.VERBOSE | re.UNICODE)
# CommonMark with inline raw HTML (bleach decides which tags survive), but no
# HTML *blocks*: a line opening with <script> or <div> would otherwise be
# passed through whole, its markdown unrendered. Nesting is capped at
# markdown-it's default of 20 levels.
_MARKDOWN = MarkdownIt("commonmark").disable("html_block")

# One pass: sanitise, then linkify the sanitised token stream. (A separate
# bleach.linkify() re-parses with HTML5's tag list, which lacks <acronym>,
# and would escape it.) The nofollow callback also marks existing links.
# A Cleaner holds parser state, so it is not thread-safe: one per call.
def _cleaner() -> Cleaner:
    return Cleaner(
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        protocols=ALLOWED_PROTOCOLS,
        strip=True,
        filters=[partial(LinkifyFilter, callbacks=[nofollow], url_re=_URL_RE)],
    )


def render_html(source: str) -> str:
    """Return the sanitised HTML of a message's markdown `source`.

    Anyone may call it; it never raises for any string. Paragraph tags are
    stripped, so ``hello *world*!`` gives ``hello <em>world</em>!``; bare
    URLs become links and every link gets ``rel="nofollow"``. Disallowed tags
    are removed and their text is kept, escaped (so ``<script>`` content
    shows as inert text, never as markup).
    """
    # markdown-it ends every block with a newline; an unclosed tag would take it in
    html = _MARKDOWN.render(source).strip()
    return _cleaner().clean(html).strip()
