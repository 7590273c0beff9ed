"""Turn a message's markdown source into the safe HTML clients display.

Pure functions only: no app, no I/O. The monolith calls `render_html` when a
message is created or edited; link previews are added later by `links.py`.
"""

import re
from functools import partial

import markdown
from bleach.callbacks import nofollow
from bleach.linkifier import LinkifyFilter, build_url_re
from bleach.sanitizer import Cleaner

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
    r"\bhttps?://(?:localhost|\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-f:.]+\])(?::[0-9]+)?"
    r"(?:[/?][^\s\{\}\|\\\^`<>\"]*)?"
)
_URL_RE = re.compile(
    _LOCAL_URL + "|" + build_url_re().pattern, re.IGNORECASE | re.VERBOSE | re.UNICODE
)

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
    html = markdown.markdown(source, output_format="html")
    return _cleaner().clean(html).strip()
