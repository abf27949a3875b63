"""`rapport serve` as a client on the network meets it: header size and header time are bounded.

A real server process on a free port, spoken to over raw sockets, since the limits live in the
HTTP server (granian) and the app's outermost layer, below any test client.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.conftest import free_port, start_server

HEADER_TIMEOUT = 3  # RAPPORT_HEADER_TIMEOUT for this server: keeps the slow tests short


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RAPPORT_")},
        "RAPPORT_DATA_DIR": str(tmp_path_factory.mktemp("serve")),
        "RAPPORT_BASE_URL": f"http://127.0.0.1:{port}",
        "RAPPORT_ACCESS_LOG": "false",
        "RAPPORT_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
    }
    proc: subprocess.Popen[bytes] = start_server(env, port)
    yield port
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def exchange(port: int, head: bytes) -> bytes:
    """Send a request head; the start of what comes back (b"" when the server just closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with contextlib.suppress(OSError):  # it may answer and close before reading it all
            s.sendall(head)
        try:
            return s.recv(200)
        except ConnectionResetError:
            return b""


def request_with(size: int) -> bytes:
    return b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\n\r\n"


@pytest.mark.parametrize("size", [70 * 1024, 200 * 1024, 1024 * 1024])
def test_headers_over_64_kib_get_431(server: int, size: int) -> None:
    answer = exchange(server, request_with(size))
    assert answer.startswith(b"HTTP/1.1 431 "), answer


def test_headers_under_the_limit_pass(server: int) -> None:
    assert exchange(server, request_with(60 * 1024)).startswith(b"HTTP/1.1 200 "), server
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 350) for i in range(90))  # 31 KiB in all
    answer = exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 200 "), answer


def test_a_client_sending_headers_slowly_is_cut_off(server: int) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: 1\r\n" * 100
    started = time.monotonic()
    closed_after = None
    with socket.create_connection(("127.0.0.1", server), timeout=1) as s:
        for byte in head:  # one byte a second (the recv timeout), never finishing in time
            if time.monotonic() - started > HEADER_TIMEOUT + 5:
                break
            try:
                s.send(bytes([byte]))
                data = s.recv(200)
            except TimeoutError:
                continue
            except OSError:
                data = b""
            assert not data.startswith(b"HTTP/1.1 200"), data
            closed_after = time.monotonic() - started
            break
    assert closed_after is not None, "still open"
    assert closed_after <= HEADER_TIMEOUT + 2, closed_after


def test_an_idle_connection_is_closed_too(server: int) -> None:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server), timeout=HEADER_TIMEOUT + 5) as s:
        try:
            data = s.recv(200)
        except TimeoutError:
            pytest.fail("an idle connection stayed open")
        except OSError:
            data = b""
    assert not data.startswith(b"HTTP/1.1 200"), data
    assert time.monotonic() - started <= HEADER_TIMEOUT + 2
