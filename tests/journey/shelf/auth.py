"""Readers: register and log in with HTML forms; who is logged in lives in the session cookie."""

import functools

from flask import Blueprint, flash, g, redirect, render_template, request, session, url_for
from werkzeug.security import check_password_hash, generate_password_hash

from .db import get_db

bp = Blueprint("auth", __name__, url_prefix="/auth")


@bp.before_app_request
def load_reader():
    """Put the logged-in reader (or None) in g.reader."""
    reader_id = session.get("reader_id")
    g.reader = None if reader_id is None else get_db().execute(
        "SELECT * FROM readers WHERE id = ?", (reader_id,)).fetchone()


def login_required(view):
    """Send anonymous visitors to the login form."""

    @functools.wraps(view)
    def wrapped(**kwargs):
        if g.reader is None:
            return redirect(url_for("auth.login"))
        return view(**kwargs)

    return wrapped


@bp.route("/register", methods=("GET", "POST"))
def register():
    """The registration form; anyone may call it."""
    if request.method == "POST":
        name, password = request.form["name"].strip(), request.form["password"]
        error = None if name and password else "Name and password are required."
        if error is None:
            try:
                get_db().execute("INSERT INTO readers (name, password) VALUES (?, ?)",
                                 (name, generate_password_hash(password, method="pbkdf2:sha256:1000")))
                get_db().commit()
            except get_db().IntegrityError:
                error = f"Reader {name} is already registered."
            else:
                return redirect(url_for("auth.login"))
        flash(error)
    return render_template("register.html")


@bp.route("/login", methods=("GET", "POST"))
def login():
    """The login form; on success the session cookie carries the reader's id."""
    if request.method == "POST":
        reader = get_db().execute("SELECT * FROM readers WHERE name = ?",
                                  (request.form["name"].strip(),)).fetchone()
        if reader is None or not check_password_hash(reader["password"], request.form["password"]):
            flash("Incorrect name or password.")
        else:
            session.clear()
            session["reader_id"] = reader["id"]
            return redirect(url_for("index"))
    return render_template("login.html")


@bp.route("/logout")
def logout():
    """Forget the reader."""
    session.clear()
    return redirect(url_for("index"))
