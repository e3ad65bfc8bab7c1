"""Timestampers for pyhanko: the built-in TSA in-process, or external TSAs with failover.

:class:`LocalTimeStamper` asks a :class:`~kyso.certs.tsa.TimeStampAuthority` directly (no HTTP):
what ``kyso sign`` uses by default, so a signature gets a trusted time even when no server
runs. External TSAs go through :class:`kyso.certs.tsa_client.FailoverTimeStamper`.
"""

from __future__ import annotations

from asn1crypto import tsp
from pyhanko.sign.timestamps.api import TimeStamper

from kyso.certs.errors import TSAError
from kyso.certs.tsa import TimeStampAuthority, TimeStampResponse


class LocalTimeStamper(TimeStamper):
    """A pyhanko timestamper answered by the in-process built-in TSA."""

    local = True
    """Its certificate is the built-in PKI's: revocation data for it is at hand, no fetching."""

    def __init__(self, tsa: TimeStampAuthority) -> None:
        super().__init__(include_nonce=True)
        self._tsa = tsa

    async def async_request_tsa_response(self, req: tsp.TimeStampReq) -> tsp.TimeStampResp:
        der = self._tsa.respond(req.dump())
        # asn1crypto's TimeStampResp cannot parse a rejection (no token): look first
        status = TimeStampResponse.load(der)["status"]
        if status["status"].native not in ("granted", "granted_with_mods"):
            texts = status["status_string"].native or []
            raise TSAError(detail="built-in TSA refused: " + "; ".join(texts))
        return tsp.TimeStampResp.load(der)
