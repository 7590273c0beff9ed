"""Gunicorn settings of the ui service.

``gunicorn -c python:extracted.ui.gunicorn_conf --bind HOST:PORT extracted.ui.wsgi:app``.
"""

from extracted.common.gunicorn import service_settings

globals().update(service_settings("ui"))
