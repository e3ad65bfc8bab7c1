"""Errors of the exchange between agencies (edXML packages and status messages).

Every error carries a catalogue code (``kyso/i18n/messages/exchange.toml``) and the parameters
its message needs.  Malformed or hostile input (not XML, a DTD, too large, a required element
missing, an undecodable attachment) raises :class:`MalformedMessage`; a well-formed message that
fails a check (bad signature, untrusted certificate, altered attachment, invalid metadata) is
not an exception: it parses, and its verdict lists the reasons (see ``Verdict``).
"""

from __future__ import annotations

from kyso.errors import KysoError

__all__ = [
    "ExchangeError",
    "ExchangeRejected",
    "ExchangeSigningError",
    "MalformedMessage",
    "MessageTooLarge",
    "UnsupportedMetadata",
]


class ExchangeError(KysoError):
    """Anything that went wrong while building or reading an exchange message."""

    code = "exchange.error"


class MalformedMessage(ExchangeError, ValueError):
    """The input is not an edXML message kyso can read (never an lxml traceback)."""

    code = "exchange.malformed.generic"


class MessageTooLarge(MalformedMessage):
    """The message, an attachment, the header or the nesting exceeds a configured limit."""

    code = "exchange.malformed.too_large"


class UnsupportedMetadata(ExchangeError, ValueError):
    """The document cannot be exchanged as described (unregistered draft, secret document, a
    code the code tables do not know, an invalid field)."""

    code = "exchange.metadata.invalid"


class ExchangeSigningError(ExchangeError):
    """The message could not be signed with the agency's key."""

    code = "exchange.sign.failed"


class ExchangeRejected(ExchangeError):
    """Raised by ``require_accepted()`` when a parsed message's verdict is negative;
    ``params['reasons']`` lists the reasons' catalogue codes."""

    code = "exchange.rejected"
