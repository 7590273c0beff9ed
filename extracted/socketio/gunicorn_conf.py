"""Gunicorn settings of the socketio service.

``gunicorn -c python:extracted.socketio.gunicorn_conf --bind HOST:PORT extracted.socketio.wsgi:app``.
One worker by default: Socket.IO over several workers needs sticky sessions
(the Redis queue already spreads pushes across processes).
"""

from extracted.common.gunicorn import service_settings

globals().update(service_settings("socketio"))
