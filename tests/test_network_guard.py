"""Tests never reach the internet: only loopback connections are allowed."""

from __future__ import annotations

import socket

import pytest
from pytest_socket import SocketConnectBlockedError


def test_non_loopback_connections_are_blocked() -> None:
    # pytest-socket warns, then raises; with warnings as errors the warning comes first.
    with pytest.raises((SocketConnectBlockedError, UserWarning), match=r"192\.0\.2\.1"):
        socket.create_connection(("192.0.2.1", 80), timeout=0.1)  # TEST-NET-1, never routed
