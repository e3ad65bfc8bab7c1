"""The root of every kyso error.

Each package has its own hierarchy built on :class:`KysoError` (``CertsError`` in
``kyso.certs``, later ``SigningError``, ``StorageError``...).  An error carries a stable
``code`` (a key of the translation catalogue, ``kyso/i18n/messages/*.toml``) and the
``params`` the message needs, so the CLI and the API can show it in the user's language;
``str(error)`` is the English text, for logs.
"""

from __future__ import annotations

from typing import Any


class KysoError(Exception):
    """Base class of all kyso errors."""

    code: str = "error.generic"

    def __init__(self, code: str | None = None, /, **params: Any) -> None:
        if code is not None:
            self.code = code
        self.params = params
        super().__init__(self.code)

    def message(self, locale: str | None = None) -> str:
        """This error's text in ``locale`` (default: the process locale)."""
        from kyso.i18n import t

        return t(self.code, locale=locale, **self.params)

    @property
    def msg(self) -> str:
        return self.message("en")

    def __str__(self) -> str:
        return self.msg
