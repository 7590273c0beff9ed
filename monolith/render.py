"""Turn a message's markdown source into the safe HTML clients display.

Pure functions only: no app, no I/O. The monolith calls `render_html` when a
message is created or edited; link previews are added later by `links.py`.
"""

from functools import partial

import markdown
from bleach.callbacks import nofollow
from bleach.linkifier import LinkifyFilter
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
        filters=[partial(LinkifyFilter, callbacks=[nofollow])],
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
