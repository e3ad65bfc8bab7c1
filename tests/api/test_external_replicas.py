"""Two-phase (USB token) signing across API replicas: ``prepare_external`` on one replica,
``complete_external`` on another that shares only the catalogue database and the object store
(its data directory is a copy made *before* the preparation: the PKI files, as every host of a
deployment has them, but nothing prepare wrote).  On SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import shutil
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.serialization import Encoding
from pyhanko.pdf_utils.reader import PdfFileReader

from kyso.api import workflow
from kyso.api.principal import Principal
from kyso.api.problems import Problem
from kyso.api.services import Services
from kyso.archive.catalog import Catalog
from kyso.archive.models import DocumentVersion
from kyso.certs import identity
from kyso.certs.keys import KeyHandle
from kyso.signer import external
from kyso.signer.appearance import MM, demo_seal_png
from kyso.signer.verify import VerifyPolicy, verify
from tests.api.service_helpers import catalog_on, fresh_code, make_agency_with_users, with_catalog
from tests.conftest import make_settings
from tests.signer.helpers import make_pdf

META = {
    "type": "Quyết định",
    "subject": "Quyết định ký bằng USB token qua hai máy chủ",
    "symbol": "QĐ-UBND",
    "place": "Hà Nội",
    "signer": "Trần Thị Bình",
    "position": "Phó Chủ tịch",
}


@contextmanager
def shared_catalogue(kind: str, folder: Path) -> Iterator[tuple[Catalog, Catalog]]:
    """One migrated catalogue database, opened twice (one engine per replica): a SQLite file,
    or a fresh schema on KYSO_TEST_POSTGRES_URL (the test fails when it is not set)."""
    with catalog_on(kind, folder) as first:
        second = Catalog(first.url, schema=first.schema)
        try:
            yield first, second
        finally:
            second.close()


@dataclass
class Replicas:
    one: Services
    two: Services
    official: Principal
    clerk: Principal
    token: KeyHandle
    chain: bytes
    folder: Path

    def upload(self) -> int:
        path = self.folder / f"draft-{uuid.uuid4().hex[:8]}.pdf"
        path.write_bytes(make_pdf(1) + f"\n% {uuid.uuid4().hex}\n".encode())
        return workflow.upload(self.one, self.official, path, META).document_id

    def prepare(self, doc: int, level: str = "B-T") -> workflow.ExternalPrepared:
        return workflow.prepare_external(
            self.one, self.official, doc, certificate=self.chain, level=level
        )

    def sign(self, prepared: workflow.ExternalPrepared) -> bytes:
        """What the official's USB token gives back for the prepared signature."""
        return self.token.sign(prepared.signed_attributes)

    def versions(self, doc: int) -> list[str]:
        with self.two.catalog.session() as s:
            return list(
                s.scalars(
                    sa.select(DocumentVersion.kind)
                    .where(DocumentVersion.document_id == doc)
                    .order_by(DocumentVersion.seq)
                )
            )

    def pending(self, handle: str) -> Any:
        with self.two.catalog.session() as s:
            return s.execute(
                sa.select(workflow.pending_signatures).where(
                    workflow.pending_signatures.c.handle == handle
                )
            ).first()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def replicas(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Replicas]:
    folder = tmp_path_factory.mktemp(f"replicas-{request.param}")
    objects = folder / "objects"

    def settings(data: Path) -> Any:
        return make_settings(
            data, ca_key_type="ec-p256", archive_verify_offline=True, archive_store=str(objects)
        )

    with shared_catalogue(request.param, folder) as (catalog_one, catalog_two):
        one = with_catalog(Services(settings(folder / "data-one")), catalog_one)
        one.ensure_pki()
        code = fresh_code()
        users = make_agency_with_users(one, code, roles=("official", "clerk"), seal_key=True)
        issued = one.pki.issue(
            kind="person",
            subject=identity.person_subject(
                "Trần Thị Bình", ids=["CCCD:001190000123"], title="Phó Chủ tịch"
            ),
            label=f"usb-token-{uuid.uuid4().hex[:6]}",
            key_type="ec-p256",
        )
        token = one.keys.resolve(issued.key_uri)
        chain = b"".join(c.public_bytes(Encoding.PEM) for c in (token.certificate, *token.chain))
        # the second host: the PKI files, nothing of the first host's state beyond that point
        shutil.copytree(
            folder / "data-one", folder / "data-two", ignore=shutil.ignore_patterns("pending")
        )
        two = with_catalog(Services(settings(folder / "data-two")), catalog_two)
        yield Replicas(
            one, two, users["official"][0], users["clerk"][0], token, chain, folder / "work"
        )


@pytest.fixture(autouse=True)
def _work(replicas: Replicas) -> None:
    replicas.folder.mkdir(exist_ok=True)


def files_named(root: Path, handle: str) -> list[Path]:
    return [p for p in root.rglob("*") if handle in p.name]


def test_prepared_on_one_replica_completed_on_another(replicas: Replicas) -> None:
    r = replicas
    doc = r.upload()
    prepared = r.prepare(doc)
    # the state is in the catalogue, not on the first host's disk
    row = r.pending(prepared.handle)
    assert row is not None and row.prepared_pdf.startswith(b"%PDF") and row.state
    assert row.claimed_by is None
    for data_dir in (r.one.settings.data_dir, r.two.settings.data_dir):
        assert files_named(data_dir, prepared.handle) == []

    # a refused signature leaves the preparation in place, on either replica
    with pytest.raises(external.SignatureRejectedError):
        workflow.complete_external(
            r.two, r.official, doc, handle=prepared.handle, signature=b"\x30" * 70
        )
    assert r.pending(prepared.handle).claimed_by is None

    result = workflow.complete_external(
        r.two, r.official, doc, handle=prepared.handle, signature=r.sign(prepared)
    )
    assert result.kind == "person_signed"
    assert r.pending(prepared.handle) is None
    assert r.versions(doc) == ["draft", "person_signed"]

    # single use: the same handle again, on either replica, is unknown
    for services in (r.two, r.one):
        with pytest.raises(Problem) as exc:
            workflow.complete_external(
                services, r.official, doc, handle=prepared.handle, signature=r.sign(prepared)
            )
        assert (exc.value.status, exc.value.slug) == (404, "not-found")
    assert r.versions(doc) == ["draft", "person_signed"]

    # the token's signature verifies, read back through the first replica (offline: a B-T
    # signature embeds no revocation data, so only its integrity and signer are checked here)
    target = r.folder / f"signed-{doc}.pdf"
    workflow.download(r.one, r.official, doc, target)
    report = verify(target, VerifyPolicy.from_services(r.one, offline=True)).to_dict()
    [sig] = [s for s in report["signatures"] if s.get("kind") == "signature"]
    integrity = sig["integrity"]
    assert integrity["signature_ok"] and integrity["digest_ok"], sig
    assert integrity["covers_whole_file"] and not sig["modified_after_signing"]
    assert sig["signer"]["sha256"] == r.token.certificate.fingerprint(SHA256()).hex().upper()
    assert sig["level"] == "B-T" and sig["timestamp"]["intact"] and sig["timestamp"]["trusted"]
    # and the clerk goes on from there on either replica: numbered and sealed (B-LT, with the
    # revocation data), the whole document passes
    workflow.register(r.one, r.clerk, doc)
    # the agency's seal has its image: the token's signature has none (it is invisible), and
    # the seal goes to the usual signature block instead of being refused
    seal_ref = r.two.accounts.agency_key(r.clerk.agency)
    assert seal_ref is not None
    image = r.two.image_path(r.two.keys.resolve(seal_ref).label)
    image.parent.mkdir(parents=True, exist_ok=True)
    image.write_bytes(demo_seal_png("ỦY BAN NHÂN DÂN"))
    try:
        workflow.seal(r.two, r.clerk, doc)
    finally:
        image.unlink()
    assert r.versions(doc) == ["draft", "person_signed", "registered", "sealed"]
    sealed = r.folder / f"sealed-{doc}.pdf"
    workflow.download(r.one, r.clerk, doc, sealed)
    with sealed.open("rb") as fh:
        fields = PdfFileReader(fh, strict=False).embedded_signatures
        # kyso's signature fields are merged with their widget: the rectangle is the field's
        rects = [[float(v) for v in f.sig_field["/Rect"]] for f in fields]
    person_rect, seal_rect = rects[0], rects[-1]
    assert person_rect[2] - person_rect[0] == 0  # the token's signature: invisible
    assert seal_rect[2] - seal_rect[0] == pytest.approx(36 * MM, abs=0.5)  # the seal: shown
    checked = workflow.verify_document(r.two, r.clerk, doc)
    assert checked["indication"] == "TOTAL_PASSED", checked
    kinds = [s["signer"]["kind"] for s in checked["signatures"] if s.get("kind") == "signature"]
    assert kinds == ["person", "organisation"]


def test_two_replicas_completing_the_same_handle_sign_once(replicas: Replicas) -> None:
    r = replicas
    doc = r.upload()
    prepared = r.prepare(doc, level="B-B")
    value = r.sign(prepared)
    start = threading.Barrier(2)
    outcomes: list[object] = []

    def complete(services: Services) -> None:
        start.wait()
        try:
            outcomes.append(
                workflow.complete_external(
                    services, r.official, doc, handle=prepared.handle, signature=value
                )
            )
        except (Problem, external.ExternalSigningError) as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=complete, args=(s,)) for s in (r.one, r.two)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    done = [o for o in outcomes if not isinstance(o, Exception)]
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert len(done) == 1 and len(refused) == 1, outcomes
    [error] = refused
    # the loser either found the handle held (busy) or already gone (unknown)
    if isinstance(error, Problem):
        assert (error.status, error.slug) == (404, "not-found")
    else:
        assert error.code in ("signer.external.busy", "signer.external.unknown_handle")
    assert r.versions(doc) == ["draft", "person_signed"]
    assert r.pending(prepared.handle) is None


def test_a_held_handle_is_busy_and_only_its_holder_consumes_it(replicas: Replicas) -> None:
    r = replicas
    doc = r.upload()
    prepared = r.prepare(doc, level="B-B")
    claim, _ = workflow._claim_pending(r.one, prepared.handle)  # replica one is mid-way
    with pytest.raises(external.ExternalSigningError) as exc:
        workflow.complete_external(
            r.two, r.official, doc, handle=prepared.handle, signature=r.sign(prepared)
        )
    assert exc.value.code == "signer.external.busy"
    assert r.versions(doc) == ["draft"]

    # replica one died: once its lease is over, replica two takes the handle over and signs;
    # replica one, should it wake up, can no longer consume it
    with r.two.catalog.session() as s:
        s.execute(
            workflow.pending_signatures.update()
            .where(workflow.pending_signatures.c.handle == prepared.handle)
            .values(claimed_until=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    result = workflow.complete_external(
        r.two, r.official, doc, handle=prepared.handle, signature=r.sign(prepared)
    )
    assert result.kind == "person_signed"
    assert not workflow._forget_pending(r.one, prepared.handle, claim=claim)
    assert r.versions(doc) == ["draft", "person_signed"]


def test_an_expired_preparation_is_refused_and_purged(replicas: Replicas) -> None:
    r = replicas
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    table = workflow.pending_signatures

    def expire(handle: str) -> None:
        with r.one.catalog.session() as s:
            s.execute(table.update().where(table.c.handle == handle).values(expires_at=past))

    doc = r.upload()
    prepared = r.prepare(doc, level="B-B")
    expire(prepared.handle)
    with pytest.raises(external.HandleError) as exc:
        workflow.complete_external(
            r.two, r.official, doc, handle=prepared.handle, signature=r.sign(prepared)
        )
    assert exc.value.code == "signer.external.expired"
    assert r.pending(prepared.handle) is None
    with pytest.raises(Problem) as gone:
        workflow.complete_external(
            r.one, r.official, doc, handle=prepared.handle, signature=r.sign(prepared)
        )
    assert gone.value.status == 404
    assert r.versions(doc) == ["draft"]

    # the next preparation, on any replica, purges what expired (the document and the
    # signed attributes of the old one are no longer kept anywhere)
    stale = r.prepare(doc, level="B-B")
    expire(stale.handle)
    fresh = workflow.prepare_external(r.two, r.official, doc, certificate=r.chain, level="B-B")
    assert r.pending(stale.handle) is None
    assert r.pending(fresh.handle) is not None
    result = workflow.complete_external(
        r.one, r.official, doc, handle=fresh.handle, signature=r.sign(fresh)
    )
    assert result.kind == "person_signed"


def test_a_preparation_from_before_the_upgrade_is_unknown(replicas: Replicas) -> None:
    """A row migration 0009 found (its state in the old files): answered as an unknown
    handle, and forgotten."""
    r = replicas
    doc = r.upload()
    prepared = r.prepare(doc, level="B-B")
    table = workflow.pending_signatures
    with r.one.catalog.session() as s:
        s.execute(
            table.update()
            .where(table.c.handle == prepared.handle)
            .values(prepared_pdf=None, state=None)
        )
    with pytest.raises(external.HandleError) as exc:
        workflow.complete_external(
            r.two, r.official, doc, handle=prepared.handle, signature=r.sign(prepared)
        )
    assert exc.value.code == "signer.external.unknown_handle"
    assert r.pending(prepared.handle) is None
    assert r.versions(doc) == ["draft"]


def test_a_failed_archive_gives_the_preparation_back(
    replicas: Replicas, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = replicas
    doc = r.upload()
    prepared = r.prepare(doc, level="B-B")

    def broken(*_: object, **__: object) -> object:
        raise OSError("object store unreachable")

    with monkeypatch.context() as patch:
        patch.setattr(r.two.archive, "put", broken)
        with pytest.raises(OSError):
            workflow.complete_external(
                r.two, r.official, doc, handle=prepared.handle, signature=r.sign(prepared)
            )
    row = r.pending(prepared.handle)
    assert row is not None and row.claimed_by is None and row.state
    assert r.versions(doc) == ["draft"]
    result = workflow.complete_external(
        r.one, r.official, doc, handle=prepared.handle, signature=r.sign(prepared)
    )
    assert result.kind == "person_signed"
    assert r.versions(doc) == ["draft", "person_signed"]
