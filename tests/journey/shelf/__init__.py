"""Shelf: a reading list, the way a small Flask app is usually written.

The second monolith of the test suite (Flack is the first): blueprints, a
signed-cookie session, HTML forms, plain ``sqlite3``, no health endpoint,
no SQLAlchemy and no alembic. ``strangler init`` must work on it untouched.
"""

import os

from flask import Flask


def create_app(test_config=None):
    """Build the app; the database file comes from SHELF_DATABASE or the instance folder."""
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(
        SECRET_KEY=os.environ.get("SECRET_KEY", "dev"),
        DATABASE=os.environ.get("SHELF_DATABASE")
        or os.path.join(app.instance_path, "shelf.sqlite"),
    )
    if test_config is not None:
        app.config.from_mapping(test_config)
    os.makedirs(os.path.dirname(app.config["DATABASE"]), exist_ok=True)

    from . import auth, books, db

    db.init_app(app)
    app.register_blueprint(auth.bp)
    app.register_blueprint(books.bp)
    app.add_url_rule("/", endpoint="index")
    return app
