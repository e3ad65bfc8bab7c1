"""The one translation catalogue for user-facing text (Vietnamese first, English second).

Messages live in TOML fragments under ``kyso/i18n/messages/`` (one per area, so parallel work
does not fight over one file); they are merged into one catalogue at first use.  Each entry::

    ["certs.keystore.not_found"]
    vi = "Không tìm thấy khóa “{label}”."
    en = "No key named “{label}”."

``t(key, **params)`` formats the entry in the current locale; a missing translation falls back
to English, then to the key itself, so a gap shows up rather than crashing.
"""

from __future__ import annotations

import os
import tomllib
from contextvars import ContextVar
from functools import lru_cache
from importlib import resources
from typing import Any

LOCALES = ("vi", "en")
DEFAULT_LOCALE = "vi"

_current: ContextVar[str | None] = ContextVar("kyso_locale", default=None)


@lru_cache(maxsize=1)
def catalogue() -> dict[str, dict[str, str]]:
    """Every message, merged from all fragments: ``{key: {locale: text}}``."""
    merged: dict[str, dict[str, str]] = {}
    folder = resources.files("kyso.i18n") / "messages"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".toml"):
            continue
        data = tomllib.loads(entry.read_text(encoding="utf-8"))
        for key, texts in data.items():
            if key in merged:
                raise RuntimeError(f"message {key!r} defined twice (again in {entry.name})")
            merged[key] = dict(texts)
    return merged


def current_locale() -> str:
    """The locale in force: set_locale() in this context, else KYSO_LOCALE, else Vietnamese."""
    loc = _current.get() or os.environ.get("KYSO_LOCALE") or DEFAULT_LOCALE
    return loc if loc in LOCALES else DEFAULT_LOCALE


def set_locale(locale: str | None) -> None:
    """Use ``locale`` for messages formatted in this context (None: back to the default)."""
    if locale is not None and locale not in LOCALES:
        raise ValueError(f"unsupported locale {locale!r}; choose one of {LOCALES}")
    _current.set(locale)


def t(key: str, locale: str | None = None, **params: Any) -> str:
    """The message ``key`` in ``locale`` (default: current), formatted with ``params``."""
    texts = catalogue().get(key)
    if texts is None:
        return key if not params else f"{key} {params}"
    loc = locale if locale in LOCALES else current_locale()
    text = texts.get(loc) or texts.get("en") or key
    try:
        return text.format(**params)
    except (KeyError, IndexError, ValueError):
        return text
