"""The JSON API under ``/api``: users, tokens and messages, one blueprint."""

from flask import Blueprint

bp = Blueprint("api", __name__)

from monolith.api import messages, tokens, users  # noqa: E402,F401  (views attach to bp)
