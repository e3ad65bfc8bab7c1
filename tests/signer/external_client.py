"""A stand-in for a USB token's middleware or a remote signing service, run as its own process.

It knows nothing of kyso (only ``cryptography`` and ``asn1crypto``) and holds the private key,
which kyso never sees. Three modes, all printing base64 on stdout:

``--signed-attrs B64``
    sign the DER signed attributes kyso prepared, hashing them here with ``--digest-algorithm``
    (what a token does with CKM_SHA256_RSA_PKCS / CKM_ECDSA_SHA256);
``--digest VALUE``
    sign a hash already computed (``PreparedSignature.digest``) as a prehashed value, hex or
    base64 after ``--encoding`` (what a remote signing service that takes hashes does);
``--cms --document-digest HEX --cert PEM``
    build a whole CMS SignedData like a token middleware: its own signed attributes
    (content-type, message-digest of the document, ESS signing-certificate-v2), its signature,
    the certificate.

The key is an unencrypted PKCS#8 PEM file (``--key``); RSA keys sign PKCS#1 v1.5, EC keys
DER-encoded ECDSA.

    python tests/signer/external_client.py --key k.pem --signed-attrs MYIB...
    python tests/signer/external_client.py --key k.pem --digest 3f2a... --encoding hex
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import sys
from pathlib import Path

from asn1crypto import algos, cms, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

HASHES: dict[str, hashes.HashAlgorithm] = {
    "sha256": hashes.SHA256(),
    "sha384": hashes.SHA384(),
    "sha512": hashes.SHA512(),
}


def _decode(value: str, encoding: str) -> bytes:
    return bytes.fromhex(value) if encoding == "hex" else base64.b64decode(value, validate=True)


def sign(key: object, data: bytes, algorithm: hashes.HashAlgorithm, *, prehashed: bool) -> bytes:
    chosen: hashes.HashAlgorithm | utils.Prehashed = (
        utils.Prehashed(algorithm) if prehashed else algorithm
    )
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), chosen)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(chosen))
    raise SystemExit(f"unsupported key {type(key).__name__}")


def build_cms(key: object, cert_pem: bytes, document_digest: bytes, md: str) -> bytes:
    cert = asn1_x509.Certificate.load(
        x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    )
    ess = tsp.SigningCertificateV2(
        {
            "certs": [
                {
                    "hash_algorithm": {"algorithm": md},
                    "cert_hash": getattr(hashlib, md)(cert.dump()).digest(),
                    "issuer_serial": {
                        "issuer": [asn1_x509.GeneralName({"directory_name": cert.issuer})],
                        "serial_number": cert.serial_number,
                    },
                }
            ]
        }
    )
    signed_attrs = cms.CMSAttributes(
        [
            cms.CMSAttribute({"type": "content_type", "values": ["data"]}),
            cms.CMSAttribute({"type": "message_digest", "values": [document_digest]}),
            cms.CMSAttribute({"type": "signing_certificate_v2", "values": [ess]}),
        ]
    )
    signature = sign(key, signed_attrs.dump(), HASHES[md], prehashed=False)
    mechanism = f"{md}_rsa" if isinstance(key, rsa.RSAPrivateKey) else f"{md}_ecdsa"
    info = cms.SignerInfo(
        {
            "version": "v1",
            "sid": cms.SignerIdentifier(
                {
                    "issuer_and_serial_number": {
                        "issuer": cert.issuer,
                        "serial_number": cert.serial_number,
                    }
                }
            ),
            "digest_algorithm": algos.DigestAlgorithm({"algorithm": md}),
            "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": mechanism}),
            "signed_attrs": signed_attrs,
            "signature": signature,
        }
    )
    signed_data = cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [algos.DigestAlgorithm({"algorithm": md})],
            "encap_content_info": {"content_type": "data"},  # detached
            "certificates": [cms.CertificateChoices({"certificate": cert})],
            "signer_infos": [info],
        }
    )
    return cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--key", type=Path, required=True, help="PKCS#8 PEM private key")
    parser.add_argument("--digest-algorithm", default="sha256", choices=sorted(HASHES))
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--signed-attrs", help="base64 DER signed attributes to sign")
    mode.add_argument("--digest", help="prehashed value to sign (see --encoding)")
    mode.add_argument("--cms", action="store_true", help="build a whole CMS SignedData")
    parser.add_argument("--encoding", choices=["hex", "base64"], default="hex")
    parser.add_argument("--document-digest", help="hex document digest (--cms)")
    parser.add_argument("--cert", type=Path, help="PEM signer certificate (--cms)")
    args = parser.parse_args(argv)

    key = serialization.load_pem_private_key(args.key.read_bytes(), password=None)
    algorithm = HASHES[args.digest_algorithm]
    if args.signed_attrs is not None:
        out = sign(
            key, base64.b64decode(args.signed_attrs, validate=True), algorithm, prehashed=False
        )
    elif args.digest is not None:
        digest = _decode(args.digest, args.encoding)
        if len(digest) != algorithm.digest_size:
            parser.error(f"a {args.digest_algorithm} digest has {algorithm.digest_size} bytes")
        out = sign(key, digest, algorithm, prehashed=True)
    else:
        if args.document_digest is None or args.cert is None:
            parser.error("--cms needs --document-digest and --cert")
        out = build_cms(
            key, args.cert.read_bytes(), bytes.fromhex(args.document_digest), args.digest_algorithm
        )
    sys.stdout.write(base64.b64encode(out).decode("ascii") + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
