"""Fixtures of the API tests live in tests/conftest.py (the live server is shared)."""

from tests.conftest import LiveServer, free_port, start_server

__all__ = ["LiveServer", "free_port", "start_server"]
