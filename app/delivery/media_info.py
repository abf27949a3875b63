"""Facts read from media files without external tools (ffprobe is optional, this is not)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO


def _boxes(f: BinaryIO, start: int, end: int) -> dict[bytes, tuple[int, int]]:
    """ISO-BMFF boxes between start and end: type -> (payload offset, payload end)."""
    found: dict[bytes, tuple[int, int]] = {}
    pos = start
    while pos + 8 <= end:
        f.seek(pos)
        header = f.read(8)
        if len(header) < 8:
            break
        size, kind = struct.unpack(">I4s", header)
        offset = 8
        if size == 1:
            large = f.read(8)
            if len(large) < 8:
                break
            size = struct.unpack(">Q", large)[0]
            offset = 16
        elif size == 0:
            size = end - pos
        if size < offset or pos + size > end:
            break
        found.setdefault(kind, (pos + offset, pos + size))
        pos += size
    return found


def mp4_duration(path: Path) -> float | None:
    """Duration in seconds from the movie header of an MP4/MOV file, or None if unreadable."""
    try:
        with path.open("rb") as f:
            end = path.stat().st_size
            moov = _boxes(f, 0, end).get(b"moov")
            if not moov:
                return None
            mvhd = _boxes(f, *moov).get(b"mvhd")
            if not mvhd:
                return None
            f.seek(mvhd[0])
            version = f.read(1)
            if version == b"\x01":
                f.seek(mvhd[0] + 4 + 16)
                timescale, duration = struct.unpack(">IQ", f.read(12))
            else:
                f.seek(mvhd[0] + 4 + 8)
                timescale, duration = struct.unpack(">II", f.read(8))
    except (OSError, struct.error):
        return None
    if not timescale:
        return None
    return round(float(duration) / float(timescale), 3)


def pdf_pages(path: Path) -> int | None:
    """The number of pages of a PDF, or None when it cannot be read."""
    import pikepdf

    try:
        with pikepdf.open(path) as pdf:
            return len(pdf.pages)
    except (pikepdf.PdfError, OSError):
        return None
