"""WSGI entry point: ``strangler.shadow.wsgi:app`` (configured from the environment)."""

from strangler.shadow import create_app

app = create_app()
