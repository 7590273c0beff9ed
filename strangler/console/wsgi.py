"""WSGI entry point: ``strangler.console.wsgi:app`` (configured from the environment)."""

from strangler.console import create_app

app = create_app()
