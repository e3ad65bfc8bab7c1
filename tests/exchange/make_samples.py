"""Regenerate ``samples/cong-van-signed.edxml`` and ``samples/dev-root.pem``.

The signed sample is the hand-written ``samples/cong-van.src.edxml`` with an XML-DSig
signature added by kyso (signxml) with an organisation key of a brand-new built-in PKI,
whose root is written next to it.  Run from the repository root::

    .venv/bin/python -m tests.exchange.make_samples
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from kyso.api.services import Services
from kyso.certs import identity
from kyso.exchange._xml import DS_NS, NS, sign_envelope
from tests.conftest import make_settings

SAMPLES = Path(__file__).parent / "samples"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        services = Services(make_settings(Path(tmp) / "data"))
        services.ensure_pki()
        issued = services.pki.issue(
            kind="org",
            subject=identity.organisation_subject("Văn phòng Chính phủ", ids=["MST:0100000001"]),
            label="sample-vpcp",
            key_type="rsa-2048",
        )
        key = services.file_keys.load(issued.label)
        source = (SAMPLES / "cong-van.src.edxml").read_bytes()
        root = etree.fromstring(source)
        envelope = root.find(f"{{{NS}}}edXMLEnvelope")
        assert envelope is not None
        # sign a standalone copy: moving a signed element back into a tree lets lxml rewrite
        # its namespace prefixes (here edXML: → the root's default), which breaks the digest
        envelope = etree.fromstring(etree.tostring(envelope))
        header = envelope.find(f"{{{NS}}}edXMLHeader")
        assert header is not None
        placeholder = etree.SubElement(header, f"{{{DS_NS}}}Signature", nsmap={"ds": DS_NS})
        placeholder.set("Id", "placeholder")
        placeholder.tail = "\n    "
        signed = etree.tostring(sign_envelope(envelope, key))
        start = source.index(b"<edXML:edXMLEnvelope")
        end = source.index(b"</edXML:edXMLEnvelope>") + len(b"</edXML:edXMLEnvelope>")
        (SAMPLES / "cong-van-signed.edxml").write_bytes(source[:start] + signed + source[end:])
        (SAMPLES / "dev-root.pem").write_bytes(services.pki.root_cert.public_bytes(Encoding.PEM))


if __name__ == "__main__":
    main()
