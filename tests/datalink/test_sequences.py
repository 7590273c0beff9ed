"""Moving a database's id generator past rows from the other side, while the app inserts.

Write-through and the sync followers insert the peer's rows (ids of the
peer's lane) and then call ``reset_sequence`` so the next id the database
hands out is above them (PostgreSQL: the sequence; MariaDB: AUTO_INCREMENT).
The app keeps inserting meanwhile, taking ids from the same generator: no id
may be handed out twice.
"""

from __future__ import annotations

import threading
import time

import pytest
from databases import database
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from datalink.ids import Lane, configure_sequence, install_lanes
from datalink.tables import reflect
from datalink.upsert import reset_sequence

pytestmark = pytest.mark.integration

SECONDS = 4  # each side's loop; the race this guards against showed within the first second


ID_COLUMN = {"postgresql": "id SERIAL PRIMARY KEY", "mariadb": "id INTEGER AUTO_INCREMENT PRIMARY KEY"}


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_reset_sequence_racing_the_apps_inserts_never_hands_an_id_out_twice(tmp_path, kind) -> None:
    with database(kind, tmp_path, "seq_race") as url:
        engine = create_engine(url, pool_size=4)
        try:
            with engine.begin() as connection:
                connection.execute(text(f"CREATE TABLE messages ({ID_COLUMN[kind]}, created_at INTEGER, "
                                        "updated_at INTEGER, source TEXT)"))
            lane = Lane(1, 2)  # this side: odd ids, as strangler up and the apps set them
            configure_sequence(engine, "messages", "id", lane)
            install_lanes(engine, None, {"messages": lane})
            info = reflect(engine, "messages", "monolith")
            stop_at = time.monotonic() + SECONDS
            failures: list[str] = []
            made = {"app": 0, "peer": 0}

            def app() -> None:
                """The monolith's own inserts: the column's default takes the next id."""
                while time.monotonic() < stop_at and not failures:
                    try:
                        with engine.begin() as connection:
                            connection.execute(text("INSERT INTO messages (created_at, updated_at, source) "
                                                    "VALUES (1, 1, 'app')"))
                        made["app"] += 1
                    except IntegrityError as exc:
                        failures.append(str(exc.orig).splitlines()[0])

            def peer() -> None:
                """The other side's rows (even ids, ahead of ours) arriving, then the sequence moved."""
                while time.monotonic() < stop_at and not failures:
                    with engine.begin() as connection:
                        top = connection.execute(text("SELECT coalesce(max(id), 0) FROM messages")).scalar()
                        connection.execute(text("INSERT INTO messages VALUES (:i, 1, 1, 'peer')"),
                                           {"i": top + 2 + top % 2 + 6})  # even, a few ids ahead
                    reset_sequence(engine, info)
                    made["peer"] += 1

            threads = [threading.Thread(target=app) for _ in range(2)] + [threading.Thread(target=peer)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(SECONDS + 30)
            assert failures == []
            assert made["app"] > 50 and made["peer"] > 50, made  # both sides really raced
            with engine.connect() as connection:
                odd = connection.execute(text("SELECT count(*) FROM messages WHERE id % 2 = 1")).scalar()
            assert odd == made["app"]
        finally:
            engine.dispose()
