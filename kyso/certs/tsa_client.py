"""Timestamps from external RFC 3161 TSAs, with time-outs, retries and fail-over.

The Government TSA (``http://tsa.ca.gov.vn/``) answers slowly, so a client must time out,
retry with exponential back-off, and fall back to the next TSA.  :class:`TSAClient` does that
and checks every answer before accepting it: status granted, the nonce and message imprint we
sent, the policy we asked for, and the token's signature (pyhanko's CMS integrity check,
including the ESS signing-certificate attribute) by a certificate with the id-kp-timeStamping
EKU.

Trust in the TSA itself is opt-in, through ``trust=`` (trust anchors or pinned TSA
certificates, e.g. a :class:`~kyso.certs.trust.TrustStore`): the token's signer certificate
must then be one of them (exact DER match) or chain up to one of them through the certificates
embedded in the token or given as ``tsa_certificates`` (issuer name and signature, validity at
genTime, CA basicConstraints / keyCertSign / pathLenConstraint on intermediates); otherwise the
answer is refused like any other bad token, and fail-over moves on.  Use it whenever a TSA is
reached over plain HTTP (``tsa.ca.gov.vn``): without it, anybody on the network path can answer
with a token of their own PKI that passes every other check.  ``tsa_certificates`` are *not* a
pin: they only help to find the signer (tokens that do not embed their certificate) and to
build the path.  Without ``trust``, tokens are only integrity-checked and validating the TSA's
chain is left to the verifier, as for any other signature.

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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import httpx
from asn1crypto import cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
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
# Longest chain of intermediates looked for between the TSA certificate and a trust anchor.
_MAX_INTERMEDIATES = 6
_Ext = TypeVar("_Ext", bound=x509.ExtensionType)


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


def _to_cryptography(cert: x509.Certificate | asn1_x509.Certificate) -> x509.Certificate:
    if isinstance(cert, x509.Certificate):
        return cert
    if isinstance(cert, asn1_x509.Certificate):
        return x509.load_der_x509_certificate(cert.dump())
    raise TypeError(f"not a certificate: {type(cert).__name__}")


def _to_asn1(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer``'s name and key issued ``cert``."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _ext(cert: x509.Certificate, kind: type[_Ext]) -> _Ext | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _may_issue(cert: x509.Certificate, *, below: int, anchor: bool) -> str | None:
    """Why ``cert`` may not issue a certificate with ``below`` intermediates under it, or None.

    Trust anchors (RFC 5280 §6.1.1 d: a name and a key) may lack basicConstraints (v1 roots),
    but one that says it is not a CA, or may not sign certificates, issues nothing.
    """
    constraints = _ext(cert, x509.BasicConstraints)
    if constraints is None:
        if not anchor:
            return "has no basicConstraints"
    elif not constraints.ca:
        return "is not a CA"
    elif constraints.path_length is not None and constraints.path_length < below:
        return "exceeds its pathLenConstraint"
    usage = _ext(cert, x509.KeyUsage)
    if usage is not None and not usage.key_cert_sign:
        return "may not sign certificates"
    return None


def _check_trust(
    signer: x509.Certificate,
    path_certs: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    gen_time: dt.datetime,
) -> None:
    """Raise :class:`BadReplyError` unless ``signer`` is, or chains up to, one of ``anchors``.

    The path goes through ``path_certs`` (untrusted: the token's certificates and the known
    ones); each intermediate must be valid at ``gen_time``, a CA allowed to sign certificates
    and within its pathLenConstraint.  Anchors are not checked for validity (RFC 5280: an
    anchor is a name and a key), but their CA flag, keyUsage and pathLenConstraint count.
    """
    anchor_ders = {a.public_bytes(Encoding.DER) for a in anchors}
    if signer.public_bytes(Encoding.DER) in anchor_ders:
        return
    problems: list[str] = []
    # A hostile token may embed many certificates with the same names: remember signature
    # checks and dead ends, so the search stays O(certificates² × depth).
    signatures: dict[tuple[bytes, bytes], bool] = {}
    dead_ends: set[tuple[bytes, int]] = set()

    def note(problem: str) -> None:
        if problem not in problems:
            problems.append(problem)

    def issued(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
        if issuer.subject != cert.issuer:
            return False
        key = (cert.public_bytes(Encoding.DER), issuer.public_bytes(Encoding.DER))
        if key not in signatures:
            signatures[key] = _signed_by(cert, issuer)
        return signatures[key]

    def reaches_anchor(cert: x509.Certificate, below: int, seen: frozenset[bytes]) -> bool:
        # ``below``: intermediates between the issuer we look for and the TSA certificate.
        state = (cert.public_bytes(Encoding.DER), below)
        if state in dead_ends:
            return False
        if search(cert, below, seen):
            return True
        dead_ends.add(state)
        return False

    def search(cert: x509.Certificate, below: int, seen: frozenset[bytes]) -> bool:
        for anchor in anchors:
            if issued(cert, anchor):
                problem = _may_issue(anchor, below=below, anchor=True)
                if problem is None:
                    return True
                note(f"anchor {_name(anchor)} {problem}")
        if below >= _MAX_INTERMEDIATES:
            return False
        for ca in path_certs:
            der = ca.public_bytes(Encoding.DER)
            if der in seen or not issued(cert, ca):
                continue
            problem = _may_issue(ca, below=below, anchor=False)
            if problem is None and not (
                ca.not_valid_before_utc <= gen_time <= ca.not_valid_after_utc
            ):
                problem = "was not valid at genTime"
            if problem is not None:
                note(f"intermediate {_name(ca)} {problem}")
            elif reaches_anchor(ca, below + 1, seen | {der}):
                return True
        return False

    if not reaches_anchor(signer, 0, frozenset({signer.public_bytes(Encoding.DER)})):
        reason = "; ".join(problems) or "no path to a trust anchor"
        raise BadReplyError(f"TSA certificate {_name(signer)} is not trusted ({reason})")


def check_response(
    response_der: bytes,
    request: tsp.TimeStampReq,
    *,
    known_certificates: Sequence[asn1_x509.Certificate] = (),
    trust: Iterable[x509.Certificate | asn1_x509.Certificate] | None = None,
) -> cms.ContentInfo:
    """The token of ``response_der`` if it is a valid answer to ``request``.

    Checks the status, that the TSTInfo echoes the request's imprint, nonce and policy, and
    that the token is signed (integrity and signature, via pyhanko) by a certificate with
    the id-kp-timeStamping EKU, valid at genTime.  Raises :class:`BadReplyError` otherwise.

    :param known_certificates: where to look for the signer certificate when the token does
        not embed it, and intermediates for the path to ``trust``.  Not trusted by themselves.
    :param trust: trust anchors or pinned TSA certificates (cryptography or asn1crypto).  When
        given, the signer certificate must be one of them (same DER) or chain up to one of
        them through the token's certificates and ``known_certificates``; an empty collection
        trusts nothing.  When None, no path to a trust anchor is built: the token is only
        checked for integrity, and trusting the TSA is the verifier's business.
    """
    anchors = None if trust is None else [_to_cryptography(c) for c in trust]
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
        pinned = [_to_asn1(a) for a in anchors or ()]
        cert = _find_signer_cert(signer_info, [*embedded, *known_certificates, *pinned])
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
    if anchors is not None:
        try:
            signer = _to_cryptography(cert)
            path_certs = [_to_cryptography(c) for c in [*embedded, *known_certificates]]
        except Exception as e:
            raise BadReplyError(f"malformed certificate in the token ({type(e).__name__})") from e
        _check_trust(signer, path_certs, anchors, gen_time)
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
    """Fetches checked RFC 3161 tokens from ``urls``, in order, with retries and fail-over.

    Pass ``trust`` for any TSA reached over plain HTTP: without it a token from *any* PKI
    (with the timeStamping EKU and a valid signature) is accepted, see :func:`check_response`.
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
        trust: Iterable[x509.Certificate] | None = None,
    ) -> None:
        """
        :param urls: TSA endpoints, tried in this order.
        :param timeout: per-request time-out in seconds (connect, read, write each).
        :param retries: extra attempts per URL after a time-out, connection error or 5xx.
        :param backoff: delay before the first retry; doubled for each further retry.
        :param policy_oid: TSA policy to ask for (``reqPolicy``), None for the TSA's default.
        :param auth: HTTP Basic credentials.
        :param tsa_certificates: TSA (and intermediate CA) certificates to verify tokens that
            do not embed theirs, and to build the path to ``trust``.  They are *not* a pin: a
            token signed by another certificate is still accepted unless ``trust`` is given.
        :param trust: trust anchors or pinned TSA certificates (e.g. a
            :class:`~kyso.certs.trust.TrustStore`).  Every token's signer certificate must be
            one of them or chain up to one of them, else that TSA's answer is refused and the
            next URL is tried (the final :class:`~kyso.certs.errors.TSAError` says "TSA
            certificate CN=... is not trusted").  None (the default): tokens are only checked
            for integrity; validating the TSA's chain is left to the verifier.  An empty
            collection is refused (:class:`ValueError`) rather than read as "no pin".
        """
        if not urls:
            raise TSAError(detail="no TSA URL configured")
        if retries < 0 or timeout <= 0 or backoff < 0:
            raise ValueError("retries and backoff must be >= 0, timeout > 0")
        self.trust: tuple[x509.Certificate, ...] | None = None
        if trust is not None:
            self.trust = tuple(trust)
            if not self.trust:
                raise ValueError("trust is empty: it would refuse every token (None: no pin)")
            if not all(isinstance(c, x509.Certificate) for c in self.trust):
                raise TypeError("trust must hold cryptography x509.Certificate objects")
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
        token = check_response(
            response.content, request, known_certificates=self._known, trust=self.trust
        )
        return token, response.content


class FailoverTimeStamper(TimeStamper):
    """A pyhanko :class:`TimeStamper` backed by :class:`TSAClient`: fail-over for free.

    pyhanko builds the request (:meth:`request_cms`, with our policy) and calls
    :meth:`async_request_tsa_response`, which tries every URL with retries and returns only
    a response that passed :func:`check_response` for that request.  When all fail it raises
    :class:`~kyso.certs.errors.TSAError` (pyhanko documents ``IOError`` here but never
    catches it, so callers see kyso's error with the per-URL reasons).

    ``tsa_certificates`` and ``trust`` mean what they mean for :class:`TSAClient`: give
    ``trust`` to refuse tokens whose signer does not chain to a trusted certificate.
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
        trust: Iterable[x509.Certificate] | None = None,
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
            trust=trust,
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
