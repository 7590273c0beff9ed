"""Gunicorn settings of the tokens service (no database to migrate).

``gunicorn -c python:extracted.tokens.gunicorn_conf --bind HOST:PORT extracted.tokens.wsgi:app``
"""

from extracted.common.gunicorn import service_settings

globals().update(service_settings("tokens"))
