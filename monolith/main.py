"""The browser client: the `/` page and its static files.

The page itself is static HTML; all data comes from the JSON API and the
Socket.IO events, so the same client works whether an endpoint is served by
the monolith or by an extracted service behind the router.
"""

from flask import Blueprint, render_template

from monolith.models import SOURCE_MAX

bp = Blueprint(
    "main",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)


@bp.route("/")
def index() -> str:
    """Serve the single-page Flack client to anyone; returns the HTML page."""
    # the composer stops where the API would refuse (maxlength counts UTF-16
    # units, at least as many as the API's characters: never past the cap)
    return render_template("index.html", source_max=SOURCE_MAX)
