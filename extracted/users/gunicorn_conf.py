"""Gunicorn settings of the users service (migrates its database in the master first).

``gunicorn -c python:extracted.users.gunicorn_conf --bind HOST:PORT extracted.users.wsgi:app``
"""

from extracted.common.gunicorn import service_settings

globals().update(service_settings("users", migrate=True))
