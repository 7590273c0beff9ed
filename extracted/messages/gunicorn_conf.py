"""Gunicorn settings of the messages service.

``gunicorn -c python:extracted.messages.gunicorn_conf --bind HOST:PORT extracted.messages.wsgi:app``;
the master migrates the messages database once and joins the registry when
``STRANGLER_ETCD`` is set (see ``extracted.common.gunicorn``).
"""

from extracted.common.gunicorn import service_settings

globals().update(service_settings("messages", migrate=True))
