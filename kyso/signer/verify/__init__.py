"""Verification of signed PDFs: what a receiving agency sees, keeps and can trust.

``verify(path, VerifyPolicy(...))`` returns a :class:`VerificationReport` (the JSON
contract of ``docs/verification-report.md``); the renderers in this package turn it into
HTML, PDF and ETSI TS 119 102-2 XML.
"""

from kyso.signer.verify.engine import (
    MAX_VERIFY_BYTES,
    VerifyInputError,
    VerifyPolicy,
    async_verify,
    certificate_info,
    verify,
)
from kyso.signer.verify.model import (
    INDETERMINATE,
    SCHEMA_VERSION,
    TOTAL_FAILED,
    TOTAL_PASSED,
    Change,
    Reason,
    SignatureReport,
    VerificationReport,
)

__all__ = [
    "INDETERMINATE",
    "MAX_VERIFY_BYTES",
    "SCHEMA_VERSION",
    "TOTAL_FAILED",
    "TOTAL_PASSED",
    "Change",
    "Reason",
    "SignatureReport",
    "VerificationReport",
    "VerifyInputError",
    "VerifyPolicy",
    "async_verify",
    "certificate_info",
    "verify",
]
