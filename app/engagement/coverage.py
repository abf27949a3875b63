"""Coverage arithmetic: which seconds of a video a buyer has really watched.

A watched stretch is an interval [start, end] of media seconds, reported by the player for
continuous playback only (a seek closes one stretch and opens the next). Merging the intervals
makes rewatching count once, seeking count not at all, and 2x speed count the media seconds
covered; the union does not depend on the order in which batches arrive.
"""

from __future__ import annotations

from collections.abc import Iterable

Interval = tuple[float, float]

# Stretches closer than this are one stretch: the player reports on timeupdate (~4 per second).
JOIN_GAP = 0.5


def merge(intervals: Iterable[Iterable[float]], *, gap: float = JOIN_GAP) -> list[list[float]]:
    """Sorted, disjoint intervals covering the same seconds (neighbours within gap joined)."""
    ordered = sorted((float(a), float(b)) for a, b in intervals if b > a)
    merged: list[list[float]] = []
    for start, end in ordered:
        if merged and start <= merged[-1][1] + gap:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [[round(a, 2), round(b, 2)] for a, b in merged]


def covered(intervals: Iterable[Iterable[float]]) -> float:
    """Seconds covered by already merged intervals."""
    return round(sum(b - a for a, b in intervals), 2)


def add(
    existing: Iterable[Iterable[float]], new: Iterable[Iterable[float]]
) -> tuple[list[list[float]], float]:
    """Existing coverage plus new stretches: the merged intervals and the seconds covered."""
    merged = merge([*existing, *new])
    return merged, covered(merged)


def is_complete(covered_seconds: float, duration: float | None, *, threshold: float = 0.9) -> bool:
    """A video lesson is complete when at least threshold of its duration was watched."""
    return bool(duration) and covered_seconds >= threshold * float(duration or 0)
