"""Coverage arithmetic: seeking, replaying, fast playback, overlapping and late batches."""

from __future__ import annotations

import itertools
import random

from app.engagement.coverage import add, covered, is_complete, merge


def test_continuous_playback_counts_its_length() -> None:
    intervals, seconds = add([], [(0, 10), (10, 20), (20, 30.5)])
    assert intervals == [[0, 30.5]] and seconds == 30.5


def test_a_seek_skips_what_was_jumped_over() -> None:
    # watched 0-10, jumped to 50, watched 50-60: 20 seconds, not 60
    intervals, seconds = add([], [(0, 10), (50, 60)])
    assert intervals == [[0, 10], [50, 60]] and seconds == 20


def test_replay_counts_once() -> None:
    first, _ = add([], [(0, 30)])
    again, seconds = add(first, [(5, 25), (0, 30)])
    assert again == [[0, 30]] and seconds == 30


def test_double_speed_counts_media_seconds_not_wall_time() -> None:
    # 15 wall-clock seconds at 2x cover 30 media seconds; the player reports media positions.
    _, seconds = add([], [(0, 30)])
    assert seconds == 30


def test_overlapping_batches_merge() -> None:
    a, _ = add([], [(0, 12), (20, 25)])
    b, seconds = add(a, [(10, 22), (24, 40)])
    assert b == [[0, 40]] and seconds == 40


def test_arrival_order_does_not_matter() -> None:
    stretches = [(0.0, 4.0), (3.0, 9.0), (15.0, 18.0), (17.5, 30.0), (40.0, 41.0), (8.0, 9.5)]
    expected = merge(stretches)
    for order in itertools.permutations(stretches):
        state: list[list[float]] = []
        for one in order:
            state, _ = add(state, [one])
        assert state == expected
    assert covered(expected) == 9.5 + 15 + 1


def test_random_batches_agree_with_a_second_by_second_count() -> None:
    rng = random.Random(7)
    for _ in range(50):
        stretches = []
        for _ in range(rng.randint(1, 12)):
            start = rng.randint(0, 300)
            stretches.append((float(start), float(start + rng.randint(1, 60))))
        seconds: set[int] = set()
        for a, b in stretches:
            seconds.update(range(int(a), int(b)))
        state: list[list[float]] = []
        rng.shuffle(stretches)
        total = 0.0
        for i in range(0, len(stretches), 3):
            state, total = add(state, stretches[i : i + 3])
        # neighbours within half a second are joined; on whole seconds that adds nothing
        assert total == len(seconds)


def test_empty_and_reversed_stretches_are_ignored() -> None:
    assert merge([(5, 5), (9, 3)]) == []


def test_completion_needs_ninety_percent() -> None:
    assert is_complete(90, 100) and not is_complete(89.9, 100)
    assert not is_complete(100, None) and not is_complete(0, 0)
