"""HLS renditions of video assets: segments made once with ffmpeg, playlists signed per viewer.

A rendition is a VOD playlist and its MPEG-TS segments in storage beside the MP4. Segments
are cut without re-encoding (`-c copy`), so a rendition costs seconds, not minutes; the MP4
stays the fallback for browsers without HLS. Buyers never get the stored playlist: the app
reads it and answers a copy in which every segment is a short-lived signed URL (presigned
in S3 mode), so nothing in it outlives the stream URL's TTL.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from pathlib import Path

import structlog

from app.delivery.storage import InvalidKey, Storage, check_key, new_key

log = structlog.get_logger()

PLAYLIST = "index.m3u8"
SEGMENT_SECONDS = 4
MAX_PLAYLIST_BYTES = 1024 * 1024  # ~20 hours of 4-second segments; more is not a playlist of ours


class RenditionError(Exception):
    """ffmpeg could not cut the video (or is not installed)."""


def ffmpeg_path() -> str | None:
    """The ffmpeg executable, if installed (renditions are optional)."""
    return shutil.which("ffmpeg")


def make_rendition(storage: Storage, *, source_key: str) -> str:
    """Cut the stored MP4 into HLS segments; returns the key of the playlist that lists them.

    Every segment gets a storage key of its own (keys are flat and random); the stored
    playlist names those keys where ffmpeg wrote file names.
    """
    ffmpeg = ffmpeg_path()
    if ffmpeg is None:
        raise RenditionError("ffmpeg is not installed")
    with tempfile.TemporaryDirectory(prefix="rapport-hls-") as tmp:
        folder = Path(tmp)
        source = folder / "source.mp4"
        with source.open("wb") as f:
            for chunk in storage.iter_bytes(source_key):
                f.write(chunk)
        out = folder / "out"
        out.mkdir()
        result = subprocess.run(  # noqa: S603 - a fixed argument list, no shell
            [
                ffmpeg,
                "-nostdin",
                "-loglevel",
                "error",
                "-i",
                str(source),
                "-c",
                "copy",
                "-f",
                "hls",
                "-hls_time",
                str(SEGMENT_SECONDS),
                "-hls_playlist_type",
                "vod",
                "-hls_segment_filename",
                str(out / "seg%05d.ts"),
                str(out / PLAYLIST),
            ],
            capture_output=True,
            timeout=600,
            check=False,
        )
        if result.returncode != 0 or not (out / PLAYLIST).exists():
            reason = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
            raise RenditionError(f"ffmpeg could not cut the video: {reason[0][:300]}")
        # Segments first: a playlist in storage means that all of its segments are there.
        keys: dict[str, str] = {}
        for segment in sorted(out.glob("seg*.ts")):
            keys[segment.name] = new_key("hls", segment.name)
            with segment.open("rb") as f:
                storage.put(keys[segment.name], f, content_type="video/mp2t")
        lines = [keys.get(line.strip(), line) for line in (out / PLAYLIST).read_text().splitlines()]
        playlist_key = new_key("hls", PLAYLIST)
        storage.put(
            playlist_key,
            io.BytesIO(("\n".join(lines) + "\n").encode()),
            content_type="application/vnd.apple.mpegurl",
        )
    log.info("hls.rendition_made", source=source_key, segments=len(keys))
    return playlist_key


def signed_playlist(storage: Storage, *, playlist_key: str, ttl: int) -> str:
    """The stored playlist with each segment replaced by a URL that expires after ttl."""
    size = storage.size(playlist_key)
    if size > MAX_PLAYLIST_BYTES:
        raise RenditionError("the playlist is too large")
    text = b"".join(storage.iter_bytes(playlist_key)).decode("utf-8")
    lines = []
    for line in text.splitlines():
        entry = line.strip()
        if entry and not entry.startswith("#"):
            try:
                line = storage.download_url(check_key(entry), ttl=ttl, content_type="video/mp2t")
            except InvalidKey:
                raise RenditionError(f"unexpected entry in the playlist: {entry[:80]}") from None
        lines.append(line)
    return "\n".join(lines) + "\n"
