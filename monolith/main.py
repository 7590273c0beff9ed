"""The browser client: the `/` page and its static files.

The page itself is static HTML; all data comes from the JSON API and the
Socket.IO events, so the same client works whether an endpoint is served by
the monolith or by an extracted service behind the router.
"""

from flask import Blueprint, Response, render_template

from monolith.models import SOURCE_MAX

bp = Blueprint(
    "main",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)


# Everything the page loads is its own: scripts and styles from /static, data
# from the API and Socket.IO (the WebSocket included: 'self' covers ws: and
# wss: of the same host). No inline script or style, no plugins, no framing.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
HTML_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    # links in messages lead to other sites: they learn nothing of the chat's URL
    "Referrer-Policy": "no-referrer",
}


@bp.after_app_request
def security_headers(response: Response) -> Response:
    """On every answer of an app serving the page: no MIME sniffing; on HTML, the policy above.

    Registered by the blueprint, so the monolith and the ui service (which
    registers this blueprint) send the same headers; a header a view set
    itself is kept.
    """
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if response.mimetype == "text/html":
        for name, value in HTML_HEADERS.items():
            response.headers.setdefault(name, value)
    return response


@bp.route("/")
def index() -> str:
    """Serve the single-page Flack client to anyone; returns the HTML page."""
    # the composer stops where the API would refuse (maxlength counts UTF-16
    # units, at least as many as the API's characters: never past the cap)
    return render_template("index.html", source_max=SOURCE_MAX)
