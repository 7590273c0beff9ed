"""datalink.ids: the pure lane arithmetic, on exact values."""

from __future__ import annotations

import pytest

from datalink.ids import Lane, lane_of, next_id, parse_lane


@pytest.mark.parametrize(("top", "lane", "expected"), [
    (0, Lane(1, 2), 1), (0, Lane(2, 2), 2),
    (10, Lane(1, 2), 11), (11, Lane(1, 2), 13),
    (10, Lane(2, 2), 12), (11, Lane(2, 2), 12),
    (7, Lane(3, 3), 9), (9, Lane(3, 3), 12), (7, Lane(1, 3), 10),
    (5, Lane(1, 1), 6),  # stride 1: the usual next id
])
def test_next_id_is_the_smallest_of_the_lane_above_the_top(top: int, lane: Lane, expected: int) -> None:
    assert next_id(top, lane) == expected


def test_the_monolith_takes_odd_ids_and_its_peer_even_ones() -> None:
    assert (lane_of(0), lane_of(1)) == (Lane(1, 2), Lane(2, 2))
    assert str(Lane(2, 2)) == "ids = 0 mod 2"


@pytest.mark.parametrize("raw", [[0, 2], [3, 2], [1], "1,2", [True, 2], [1.0, 2]])
def test_a_malformed_lane_names_where_and_the_fix(raw) -> None:
    with pytest.raises(ValueError, match=r"^STRANGLER_WRITE_THROUGH: 'users' lane: an id lane"):
        parse_lane(raw, "STRANGLER_WRITE_THROUGH: 'users' lane")
