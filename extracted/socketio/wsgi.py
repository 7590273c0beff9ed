"""WSGI entry point for gunicorn: ``extracted.socketio.wsgi:app``, configured from the environment."""

from extracted.socketio import create_app

app = create_app()
