"""WSGI entry point for gunicorn: ``extracted.ui.wsgi:app``, configured from the environment."""

from extracted.ui import create_app

app = create_app()
