"""WSGI entry point for gunicorn: ``extracted.tokens.wsgi:app``, configured from the environment."""

from extracted.tokens import create_app

app = create_app()
