"""``strangler monolith``: run Flack under gunicorn in the foreground.

Gunicorn with the ``gthread`` worker is the production server here too; it
is driven from code (``serve``) so one command migrates, serves and stops
cleanly on Ctrl-C.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

import click


def check_port_free(host: str, port: int) -> None:
    """Raise a one-line ClickException if *port* on *host* cannot be bound."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # like gunicorn: an old connection in TIME_WAIT must not count as "in use"
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise click.ClickException(
                    f"port {port} on {host} is already in use; pick another with --port"
                ) from None
            raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def gunicorn_options(host: str, port: int, workers: int, threads: int) -> dict[str, Any]:
    """Return the gunicorn settings ``serve`` uses: ``gunicorn_conf``'s, with this address.

    ``on_starting`` is left out: ``serve`` migrates before gunicorn starts.
    """
    from monolith import gunicorn_conf

    return {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": gunicorn_conf.worker_class,
        "graceful_timeout": gunicorn_conf.graceful_timeout,
        "timeout": gunicorn_conf.timeout,
        "loglevel": gunicorn_conf.loglevel,
        # the same registry hooks as the gunicorn command (no-ops unless STRANGLER_ETCD is set)
        "when_ready": gunicorn_conf.when_ready,
        "on_exit": gunicorn_conf.on_exit,
        **gunicorn_conf.control_socket_settings(),
    }


def serve(
    host: str = "127.0.0.1",
    port: int = 5000,
    database: str | None = None,
    workers: int = 1,
    threads: int = 64,
) -> None:
    """Migrate the database, then serve Flack with gunicorn until interrupted.

    *database* overrides ``DATABASE_URL``. Blocks; returns (or exits 0) on Ctrl-C.
    """
    from gunicorn.app.base import BaseApplication
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from monolith.config import Config, ConfigError
    from monolith.db import upgrade_database

    overrides = {"DATABASE_URL": database} if database else {}
    try:
        config = Config.from_env(overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    check_port_free(host, port)
    try:
        upgrade_database(config.database_url, config.data_dir / "migrate.lock")
    except (SQLAlchemyError, ImportError) as exc:
        shown = make_url(config.database_url).render_as_string(hide_password=True)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise click.ClickException(f"cannot migrate {shown}: {reason}") from None

    class FlackServer(BaseApplication):
        """Gunicorn driven from code; each worker builds its own app (no preload)."""

        def load_config(self) -> None:
            for key, value in gunicorn_options(host, port, workers, threads).items():
                self.cfg.set(key, value)

        def load(self):  # noqa: ANN202
            from monolith import create_app

            return create_app(overrides)

    click.echo(f"Flack is running at http://{host}:{port}/ (Ctrl-C to stop)")
    FlackServer().run()


@click.command("monolith")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535),
              help="Port to listen on.")
@click.option("--database", default=None, metavar="URL",
              help="Database URL [default: $DATABASE_URL, else SQLite in the data dir].")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Gunicorn worker processes (more than 1 needs SOCKETIO_MESSAGE_QUEUE).")
@click.option("--threads", default=64, show_default=True, type=click.IntRange(1, 1024),
              help="Threads per worker; each open WebSocket holds one.")
def monolith_command(host: str, port: int, database: str | None, workers: int, threads: int) -> None:
    """Run the Flack chat monolith alone (migrates its database first)."""
    try:
        serve(host, port, database, workers, threads)
    except KeyboardInterrupt:
        # Ctrl-C before gunicorn took over its signals: nothing to clean up
        click.echo("stopped")
