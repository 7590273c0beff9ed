"""WSGI entry point for gunicorn: ``extracted.users.wsgi:app``, configured from the environment."""

from extracted.users import create_app

app = create_app()
