"""Books: the reading list as HTML (forms) and as a small JSON API."""

from flask import Blueprint, abort, g, jsonify, redirect, render_template, request, url_for

from .auth import login_required
from .db import get_db

bp = Blueprint("books", __name__)


def _book(book_id):
    book = get_db().execute("SELECT * FROM books WHERE id = ?", (book_id,)).fetchone()
    if book is None:
        abort(404)
    return book


@bp.route("/")
def index():
    """The reading list of everyone; anyone may call it."""
    books = get_db().execute(
        "SELECT b.id, title, author, name FROM books b JOIN readers r ON r.id = b.reader_id"
        " ORDER BY b.id DESC").fetchall()
    return render_template("index.html", books=books)


@bp.route("/books/new", methods=("GET", "POST"))
@login_required
def add_book():
    """The form adding a book; logged-in readers only."""
    if request.method == "POST":
        get_db().execute("INSERT INTO books (reader_id, title, author) VALUES (?, ?, ?)",
                         (g.reader["id"], request.form["title"], request.form.get("author", "")))
        get_db().commit()
        return redirect(url_for("index"))
    return render_template("add.html")


@bp.route("/api/books")
def get_books():
    """Every book as JSON; anyone may call it."""
    rows = get_db().execute("SELECT id, title, author FROM books ORDER BY id").fetchall()
    return jsonify(books=[dict(row) for row in rows])


@bp.route("/api/books/<int:book_id>")
def get_book(book_id):
    """One book as JSON, 404 if there is none; anyone may call it."""
    return jsonify(dict(_book(book_id)))
