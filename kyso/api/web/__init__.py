"""The server-rendered web UI (being written)."""

from fastapi import APIRouter

router = APIRouter()
