"""Errors of the ``kyso.certs`` package."""

from __future__ import annotations

from kyso.errors import KysoError


class CertsError(KysoError):
    """Anything that went wrong with keys, certificates or trust services."""

    code = "certs.error"


class KeyStoreError(CertsError):
    code = "certs.keystore.error"


class KeyNotFoundError(KeyStoreError, LookupError):
    code = "certs.keystore.not_found"


class KeyExistsError(KeyStoreError):
    code = "certs.keystore.exists"


class WrongPassphraseError(KeyStoreError):
    code = "certs.keystore.wrong_passphrase"


class PKIError(CertsError):
    code = "certs.pki.error"


class RevocationError(CertsError):
    code = "certs.revocation.error"


class TSAError(CertsError):
    code = "certs.tsa.error"


class TrustStoreError(CertsError):
    code = "certs.trust.error"


class IdentityError(CertsError, ValueError):
    code = "certs.identity.error"
