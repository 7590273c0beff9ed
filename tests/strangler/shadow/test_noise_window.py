"""strangler.shadow.noise: a field is noise by its recent rate, and noise expires."""

from __future__ import annotations

from strangler.shadow.noise import NoiseRule, NoiseWindow


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_field_the_monolith_always_disagrees_on_is_noisy():
    window = NoiseWindow(NoiseRule(size=50, min_rate=0.1, min_count=3))
    for _ in range(3):
        window.observe({"created_at"})
    assert window.noisy() == {"created_at"}
    assert window.observe(set()) == {"created_at"}  # left out even where this pair agreed
    assert window.rates() == {"created_at": 0.75}


def test_a_rare_self_disagreement_is_left_out_only_where_it_happened():
    window = NoiseWindow(NoiseRule(size=100, min_rate=0.1, min_count=3))
    for i in range(60):
        left_out = window.observe({"nickname"} if i % 20 == 0 else set())
        assert left_out == ({"nickname"} if i % 20 == 0 else set())
    assert window.rates() == {"nickname": 0.05}
    assert window.noisy() == frozenset()


def test_noise_learned_in_a_burst_expires_once_the_window_has_moved_on():
    window = NoiseWindow(NoiseRule(size=20, min_rate=0.1, min_count=3))
    for _ in range(10):
        window.observe({"nickname"})
    assert window.noisy() == {"nickname"}
    for _ in range(18):
        window.observe(set())
    assert window.rates() == {"nickname": 0.1}  # 2 of the last 20
    assert window.noisy() == frozenset()  # fewer than min_count left
    for _ in range(2):
        window.observe(set())
    assert window.rates() == {}


def test_noise_older_than_max_age_is_forgotten_without_traffic():
    clock = Clock()
    window = NoiseWindow(NoiseRule(size=100, max_age=60, min_rate=0.1, min_count=1), clock=clock)
    window.observe({"token"})
    clock.now += 30
    window.observe(set())
    assert window.rates() == {"token": 0.5}
    clock.now += 31
    assert window.rates() == {}
    assert window.observe(set()) == frozenset()
