"""Errors of the ``kyso.signer`` package."""

from __future__ import annotations

from kyso.errors import KysoError


class SigningError(KysoError):
    """Anything that stopped a document from being signed; nothing was written."""

    code = "signer.error"


class BadInputError(SigningError):
    """The input is not a PDF kyso can sign (not a PDF, damaged, encrypted...)."""

    code = "signer.input.bad"


class CertificateRefusedError(SigningError):
    """The signer's certificate must not be used: revoked, expired, untrusted, wrong usage."""

    code = "signer.cert.refused"


class TimestampUnavailableError(SigningError):
    """No timestamp authority answered, and falling back to B-B was not asked for."""

    code = "signer.tsa.unavailable"


class AppearanceError(BadInputError):
    """A visible signature cannot be placed or drawn as asked (box outside the page, anchor
    text not found, unusable image...); nothing was written."""

    code = "signer.appearance.error"
