"""MP4 durations from the movie header; anything else gives None, never an exception."""

from __future__ import annotations

from pathlib import Path

from app.delivery.media_info import mp4_duration
from tests.conftest import COURSES


def test_duration_of_demo_video() -> None:
    assert mp4_duration(COURSES / "trust-at-a-distance" / "media" / "welcome.mp4") == 8.0


def test_garbage_gives_none(tmp_path: Path) -> None:
    cases = {
        "empty": b"",
        "text": b"hello world, not a video at all",
        "huge box": b"\xff\xff\xff\xffmoov" + b"\0" * 20,
        "truncated mvhd": b"\0\0\0\x10moov\0\0\0\x08mvhd",
        "zero size loop": b"\0\0\0\0free" * 3,
    }
    for name, data in cases.items():
        path = tmp_path / f"{name}.mp4"
        path.write_bytes(data)
        assert mp4_duration(path) is None, name
    assert mp4_duration(tmp_path / "missing.mp4") is None
