"""Timestamps from external RFC 3161 TSAs, with time-outs, retries and fail-over.

The Government TSA (``http://tsa.ca.gov.vn/``) answers slowly, so a client must time out,
retry with exponential back-off, and fall back to the next TSA.  :class:`TSAClient` does that
and checks every answer before accepting it: status granted, the nonce and message imprint we
sent, the policy we asked for, and the token's signature (pyhanko's CMS integrity check,
including the ESS signing-certificate attribute) by a certificate with the id-kp-timeStamping
EKU.  Trust in the TSA's *chain* is the validator's business, as for any other signature.

:class:`FailoverTimeStamper` plugs the same behaviour into pyhanko's signing pipeline
(``timestamper=`` of ``sign_pdf``, B-T/B-LTA, document timestamps).

Failures that are worth retrying on the same URL: time-outs, connection errors and HTTP 5xx.
Everything else (4xx, a rejection, a malformed or mismatching token) moves on to the next URL
at once.  When every URL fails, :class:`~kyso.certs.errors.TSAError` lists each URL and why.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
from asn1crypto import cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pyhanko.sign.timestamps.api import TimeStamper
from pyhanko.sign.validation.errors import SignatureValidationError
from pyhanko.sign.validation.generic_cms import validate_sig_integrity

from kyso.certs.errors import TSAError
from kyso.certs.tsa import DIGEST_SIZES, TimeStampResponse

__all__ = [
    "QUERY_CONTENT_TYPE",
    "REPLY_CONTENT_TYPE",
    "FailoverTimeStamper",
    "TSAClient",
    "TimestampReply",
    "build_request",
    "check_response",
]

logger = logging.getLogger(__name__)

QUERY_CONTENT_TYPE = "application/timestamp-query"
REPLY_CONTENT_TYPE = "application/timestamp-reply"
# Some old TSAs still answer with the draft content type.
_REPLY_CONTENT_TYPES = {REPLY_CONTENT_TYPE, "application/timestamp-response"}
_GRANTED = {"granted", "granted_with_mods"}


class BadReplyError(Exception):
    """Internal: a TSA answered, but its answer is unusable (try the next URL)."""


class _RetryableError(Exception):
    """Internal: a transient failure (time-out, connection error, HTTP 5xx)."""


@dataclass(frozen=True)
class TimestampReply:
    """A checked time-stamp token and the TSA URL that issued it."""

    token: cms.ContentInfo
    """The ``TimeStampToken`` (CMS ``ContentInfo``) — what pyhanko embeds."""

    url: str
    """The TSA that answered."""

    @property
    def tst_info(self) -> tsp.TSTInfo:
        """The signed ``TSTInfo``."""
        return self.token["content"]["encap_content_info"]["content"].parsed

    @property
    def gen_time(self) -> dt.datetime:
        """The time the TSA vouches for (UTC)."""
        return self.tst_info["gen_time"].native

    @property
    def serial_number(self) -> int:
        """The TSA's serial number of the token."""
        return self.tst_info["serial_number"].native

    def dump(self) -> bytes:
        """The DER of the token."""
        return self.token.dump()


def build_request(
    digest: bytes,
    hash_name: str = "sha256",
    *,
    policy_oid: str | None = None,
    nonce: int | None = None,
    cert_req: bool = True,
) -> tsp.TimeStampReq:
    """A ``TimeStampReq`` for ``digest`` (a fresh 64-bit nonce unless one is given)."""
    expected = DIGEST_SIZES.get(hash_name)
    if expected is None:
        raise TSAError(detail=f"unsupported hash algorithm {hash_name!r}")
    if len(digest) != expected:
        raise TSAError(detail=f"a {hash_name} digest has {expected} bytes, not {len(digest)}")
    fields: dict[str, object] = {
        "version": "v1",
        "message_imprint": {"hash_algorithm": {"algorithm": hash_name}, "hashed_message": digest},
        "nonce": nonce if nonce is not None else secrets.randbits(64) | 1 << 63,
        "cert_req": cert_req,
    }
    if policy_oid is not None:
        fields["req_policy"] = policy_oid
    return tsp.TimeStampReq(fields)


def _find_signer_cert(
    signer_info: cms.SignerInfo, candidates: Sequence[asn1_x509.Certificate]
) -> asn1_x509.Certificate:
    sid = signer_info["sid"]
    for cert in candidates:
        if sid.name == "issuer_and_serial_number":
            if (
                cert.issuer == sid.chosen["issuer"]
                and cert.serial_number == sid.chosen["serial_number"].native
            ):
                return cert
        elif cert.key_identifier == sid.chosen.native:
            return cert
    raise BadReplyError("the TSA certificate is neither embedded nor known")


def check_response(
    response_der: bytes,
    request: tsp.TimeStampReq,
    *,
    known_certificates: Sequence[asn1_x509.Certificate] = (),
) -> cms.ContentInfo:
    """The token of ``response_der`` if it is a valid answer to ``request``.

    Checks the status, that the TSTInfo echoes the request's imprint, nonce and policy, and
    that the token is signed (integrity and signature, via pyhanko) by a certificate with
    the id-kp-timeStamping EKU, valid at genTime.  Raises :class:`BadReplyError` otherwise.
    Does not build a path to a trust anchor.
    """
    try:
        resp = TimeStampResponse.load(response_der)
        status = resp["status"]
        status_name = status["status"].native
        if status_name not in _GRANTED:
            texts = "; ".join(status["status_string"].native or [])
            failures = ", ".join(sorted(status["fail_info"].native or []))
            raise BadReplyError(f"TSA refused: {status_name} [{failures}] {texts}".rstrip())
        token = resp["time_stamp_token"]
        if token.native is None or token["content_type"].native != "signed_data":
            raise BadReplyError("granted, but no signed time-stamp token")
        signed_data: cms.SignedData = token["content"]
        eci = signed_data["encap_content_info"]
        if eci["content_type"].native != "tst_info":
            raise BadReplyError("the token does not encapsulate a TSTInfo")
        tst_bytes = bytes(eci["content"])
        info = tsp.TSTInfo.load(tst_bytes)
        imprint = info["message_imprint"]
        sent = request["message_imprint"]
        if (
            imprint["hash_algorithm"]["algorithm"].native
            != sent["hash_algorithm"]["algorithm"].native
            or imprint["hashed_message"].native != sent["hashed_message"].native
        ):
            raise BadReplyError("the token is for another message imprint")
        if info["nonce"].native != request["nonce"].native:
            raise BadReplyError("the token's nonce does not match the request")
        if request["req_policy"].native is not None and (
            info["policy"].dotted != request["req_policy"].dotted
        ):
            raise BadReplyError(f"the token's policy is {info['policy'].dotted}, not requested")
        gen_time = info["gen_time"].native

        signer_infos = signed_data["signer_infos"]
        if len(signer_infos) != 1:
            raise BadReplyError("a time-stamp token must have exactly one signer")
        signer_info = signer_infos[0]
        embedded = [c.chosen for c in signed_data["certificates"] or () if c.name == "certificate"]
        cert = _find_signer_cert(signer_info, [*embedded, *known_certificates])
        eku = cert.extended_key_usage_value
        if eku is None or "time_stamping" not in eku.native:
            raise BadReplyError("the signing certificate lacks the id-kp-timeStamping EKU")
        validity = cert["tbs_certificate"]["validity"]
        if not validity["not_before"].native <= gen_time <= validity["not_after"].native:
            raise BadReplyError("the TSA certificate was not valid at genTime")
        md_name = signer_info["digest_algorithm"]["algorithm"].native
        actual = hashlib.new(md_name, tst_bytes).digest()
        intact, valid = validate_sig_integrity(
            signer_info, cert, expected_content_type="tst_info", actual_digest=actual
        )
    except BadReplyError:
        raise
    except SignatureValidationError as e:
        raise BadReplyError(f"the token's signature is unusable: {e.failure_message}") from e
    except Exception as e:
        raise BadReplyError(f"malformed response ({type(e).__name__})") from e
    if not (intact and valid):
        raise BadReplyError("the token's signature does not verify")
    return token


def _describe(e: BaseException) -> str:
    if isinstance(e, httpx.TimeoutException):
        return "timed out"
    if isinstance(e, httpx.TransportError):
        return f"connection failed ({type(e).__name__})"
    return str(e)


@dataclass
class _Log:
    """What went wrong with each URL, for the final error message."""

    reasons: dict[str, tuple[str, int]] = field(default_factory=dict)

    def add(self, url: str, reason: str) -> None:
        attempts = self.reasons.get(url, ("", 0))[1] + 1
        self.reasons[url] = (reason, attempts)
        logger.warning("timestamp request to %s failed (attempt %d): %s", url, attempts, reason)

    def error(self) -> TSAError:
        parts = [
            f"{url}: {reason}" + (f" ({n} attempts)" if n > 1 else "")
            for url, (reason, n) in self.reasons.items()
        ]
        return TSAError(detail="no timestamp authority answered usefully: " + "; ".join(parts))


class TSAClient:
    """Fetches checked RFC 3161 tokens from ``urls``, in order, with retries and fail-over."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        timeout: float = 10.0,
        retries: int = 2,
        backoff: float = 0.5,
        policy_oid: str | None = None,
        auth: tuple[str, str] | None = None,
        tsa_certificates: Sequence[x509.Certificate] = (),
    ) -> None:
        """
        :param urls: TSA endpoints, tried in this order.
        :param timeout: per-request time-out in seconds (connect, read, write each).
        :param retries: extra attempts per URL after a time-out, connection error or 5xx.
        :param backoff: delay before the first retry; doubled for each further retry.
        :param policy_oid: TSA policy to ask for (``reqPolicy``), None for the TSA's default.
        :param auth: HTTP Basic credentials.
        :param tsa_certificates: TSA certificates to verify tokens that do not embed theirs.
        """
        if not urls:
            raise TSAError(detail="no TSA URL configured")
        if retries < 0 or timeout <= 0 or backoff < 0:
            raise ValueError("retries and backoff must be >= 0, timeout > 0")
        self.urls = tuple(urls)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.policy_oid = policy_oid
        self.auth = auth
        self._known = [
            asn1_x509.Certificate.load(c.public_bytes(Encoding.DER)) for c in tsa_certificates
        ]

    # -- public API ----------------------------------------------------------------------

    def timestamp(self, digest: bytes, hash_name: str = "sha256") -> TimestampReply:
        """A checked token for ``digest`` (computed with ``hash_name``)."""
        request = build_request(digest, hash_name, policy_oid=self.policy_oid)
        url, token, _ = self.exchange(request)
        return TimestampReply(token=token, url=url)

    async def async_timestamp(self, digest: bytes, hash_name: str = "sha256") -> TimestampReply:
        """Async twin of :meth:`timestamp`."""
        request = build_request(digest, hash_name, policy_oid=self.policy_oid)
        url, token, _ = await self.async_exchange(request)
        return TimestampReply(token=token, url=url)

    def exchange(self, request: tsp.TimeStampReq) -> tuple[str, cms.ContentInfo, bytes]:
        """Send ``request`` until a TSA gives a valid answer: (url, token, response DER)."""
        body, log = request.dump(), _Log()
        with httpx.Client(timeout=self.timeout, auth=self.auth) as http:
            for url in self.urls:
                for attempt in range(self.retries + 1):
                    if attempt:
                        time.sleep(self._delay(attempt))
                    try:
                        response = http.post(url, content=body, headers=self._headers())
                        return url, *self._accept(response, request)
                    except _RetryableError as e:
                        log.add(url, str(e))
                    except (httpx.TimeoutException, httpx.TransportError) as e:
                        log.add(url, _describe(e))
                    except BadReplyError as e:
                        log.add(url, str(e))
                        break
        raise log.error()

    async def async_exchange(self, request: tsp.TimeStampReq) -> tuple[str, cms.ContentInfo, bytes]:
        """Async twin of :meth:`exchange`."""
        body, log = request.dump(), _Log()
        async with httpx.AsyncClient(timeout=self.timeout, auth=self.auth) as http:
            for url in self.urls:
                for attempt in range(self.retries + 1):
                    if attempt:
                        await asyncio.sleep(self._delay(attempt))
                    try:
                        response = await http.post(url, content=body, headers=self._headers())
                        return url, *self._accept(response, request)
                    except _RetryableError as e:
                        log.add(url, str(e))
                    except (httpx.TimeoutException, httpx.TransportError) as e:
                        log.add(url, _describe(e))
                    except BadReplyError as e:
                        log.add(url, str(e))
                        break
        raise log.error()

    # -- internals -----------------------------------------------------------------------

    def _delay(self, attempt: int) -> float:
        return self.backoff * 2 ** (attempt - 1)

    @staticmethod
    def _headers() -> dict[str, str]:
        return {"Content-Type": QUERY_CONTENT_TYPE, "Accept": REPLY_CONTENT_TYPE}

    def _accept(
        self, response: httpx.Response, request: tsp.TimeStampReq
    ) -> tuple[cms.ContentInfo, bytes]:
        if response.status_code >= 500:
            raise _RetryableError(f"HTTP {response.status_code}")
        if response.status_code != 200:
            raise BadReplyError(f"HTTP {response.status_code}")
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in _REPLY_CONTENT_TYPES:
            raise BadReplyError(f"unexpected content type {content_type or 'none'!r}")
        token = check_response(response.content, request, known_certificates=self._known)
        return token, response.content


class FailoverTimeStamper(TimeStamper):
    """A pyhanko :class:`TimeStamper` backed by :class:`TSAClient`: fail-over for free.

    pyhanko builds the request (:meth:`request_cms`, with our policy) and calls
    :meth:`async_request_tsa_response`, which tries every URL with retries and returns only
    a response that passed :func:`check_response` for that request.  When all fail it raises
    :class:`~kyso.certs.errors.TSAError` (pyhanko documents ``IOError`` here but never
    catches it, so callers see kyso's error with the per-URL reasons).
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        timeout: float = 10.0,
        retries: int = 2,
        backoff: float = 0.5,
        policy_oid: str | None = None,
        auth: tuple[str, str] | None = None,
        tsa_certificates: Sequence[x509.Certificate] = (),
        include_nonce: bool = True,
    ) -> None:
        super().__init__(include_nonce=include_nonce)
        self.client = TSAClient(
            urls,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            policy_oid=policy_oid,
            auth=auth,
            tsa_certificates=tsa_certificates,
        )

    def request_cms(
        self, message_digest: bytes, md_algorithm: str
    ) -> tuple[int | None, tsp.TimeStampReq]:
        """pyhanko's request, plus ``reqPolicy`` when a policy is configured."""
        nonce, req = super().request_cms(message_digest, md_algorithm)
        if self.client.policy_oid is not None:
            req["req_policy"] = core.ObjectIdentifier(self.client.policy_oid)
        return nonce, req

    async def async_request_tsa_response(self, req: tsp.TimeStampReq) -> tsp.TimeStampResp:
        """Submit ``req`` to each TSA in turn; the first valid response wins."""
        _url, _token, der = await self.client.async_exchange(req)
        return tsp.TimeStampResp.load(der)
