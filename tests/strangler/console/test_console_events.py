"""strangler.console.events: what the live stream sends, on a fake clock."""

from __future__ import annotations

import json

import pytest

from strangler.console.events import changes


def test_the_stream_sends_changes_and_heartbeats_until_its_lifetime() -> None:
    now = [0.0]
    snaps = iter([{"a": 1, "time": 1}, {"a": 1, "time": 2}, {"a": 2, "time": 3}, {"a": 2, "time": 4},
                  {"a": 2, "time": 5}, {"a": 2, "time": 6}])

    def sleep(seconds: float) -> None:
        now[0] += seconds

    sent = list(changes(lambda: next(snaps), check=1, heartbeat=3, lifetime=6, clock=lambda: now[0],
                        sleep=sleep))
    assert sent[0] == "retry: 500\n\n"
    shown = [json.loads(line.removeprefix("data: ")) for line in sent[1:]]
    # t=0 first, t=1 same data (time aside): nothing, t=2 changed, t=3 and 4 same, t=5 a heartbeat
    assert [s["time"] for s in shown] == [1, 3, 6]
    assert all(line.endswith("\n\n") for line in sent)


@pytest.mark.parametrize(("raw", "seconds"), [
    (None, 10.0), ("2", 2.0), ("0.5", 0.5), ("soon", 10.0), ("0", 10.0), ("-3", 10.0), ("inf", 10.0), ("nan", 10.0),
])
def test_the_send_timeout_comes_from_the_environment_and_a_bad_one_is_the_default(raw, seconds) -> None:
    from strangler.console import config_from

    env = {} if raw is None else {"STRANGLER_CONSOLE_SEND_TIMEOUT": raw}
    assert config_from(env)["SEND_TIMEOUT"] == seconds
