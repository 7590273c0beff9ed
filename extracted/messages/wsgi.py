"""WSGI entry point for gunicorn: ``extracted.messages.wsgi:app``, configured from the environment."""

from extracted.messages import create_app

app = create_app()
