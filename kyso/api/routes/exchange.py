"""Routes: exchange between agencies (being written)."""

from fastapi import APIRouter

router = APIRouter()
