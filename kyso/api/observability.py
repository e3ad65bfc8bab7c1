"""Request ids, structured logs and Prometheus metrics (being written)."""

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Add the logging and metrics middleware to ``app``."""
