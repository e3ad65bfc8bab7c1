"""The account store on SQLite and on the real PostgreSQL: agencies, users, passwords,
lockout, API tokens, sessions, tenancy, key bindings, signing PINs, and the audit trail (which
never holds a secret).

PostgreSQL tests read ``KYSO_TEST_POSTGRES_URL`` and fail when it is missing; each module
instance works in a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from kyso.api.accounts import (
    AccountConflict,
    AccountInvalid,
    AccountNotFound,
    AccountsBase,
    AccountStore,
    AuthenticationFailed,
    LockedOut,
    LoginThrottle,
    WebSession,
    canonical_key_ref,
    open_agency_key,
    open_signing_key,
    personal_keys_dir,
)
from kyso.api.problems import Problem
from kyso.api.services import Services
from kyso.archive import audit
from kyso.archive.models import AuditEvent
from kyso.certs import identity
from kyso.certs.errors import KeyNotFoundError, WrongPassphraseError
from kyso.certs.keys import FileKeyStore
from tests.api.service_helpers import (
    ACTOR,
    FAST_HASHER,
    PIN,
    catalog_on,
    issue_key,
    make_agency_with_users,
    make_user,
    with_catalog,
)
from tests.conftest import PASSPHRASE, make_settings

PASSWORD = "Mật khẩu rất bí mật 2026"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def services(
    request: pytest.FixtureRequest,
    dev_services: Services,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Services]:
    """The session's PKI, with a catalogue of this module's own on SQLite or PostgreSQL."""
    folder = tmp_path_factory.mktemp("accounts")
    with catalog_on(request.param, folder) as catalog:
        services = Services(make_settings(dev_services.settings.data_dir))
        with_catalog(services, catalog).accounts.hasher = FAST_HASHER
        yield services


@pytest.fixture(scope="module")
def store(services: Services) -> AccountStore:
    return services.accounts


_codes = iter(range(100, 999))


def new_code() -> str:
    return f"H{next(_codes)}.01"


def audit_rows(store: AccountStore) -> list[AuditEvent]:
    with store.catalog.session() as s:
        return list(s.scalars(sa.select(AuditEvent).order_by(AuditEvent.seq)))


def assert_no_secret(store: AccountStore, *secrets: str) -> None:
    for row in audit_rows(store):
        text = f"{row.actor} {row.action} {row.subject} {row.details_json}"
        for secret in secrets:
            assert secret not in text, (row.action, secret)


# -- schema -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_the_migration_matches_the_models_and_downgrades(kind: str, tmp_path: Path) -> None:
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    mine = set(AccountsBase.metadata.tables)

    def include(obj: object, name: str | None, type_: str, *_: object) -> bool:
        table = getattr(obj, "table", obj)
        return (type_ != "table" and getattr(table, "name", None) in mine) or name in mine

    with catalog_on(kind, tmp_path) as catalog:
        with catalog.engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "include_object": include}
            )
            assert compare_metadata(context, AccountsBase.metadata) == []
        assert mine <= set(sa.inspect(catalog.engine).get_table_names())
        config = catalog.alembic_config()
        with catalog.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0001")
        assert not mine & set(sa.inspect(catalog.engine).get_table_names())
        catalog.migrate()
        assert mine <= set(sa.inspect(catalog.engine).get_table_names())


# -- agencies and users -------------------------------------------------------------------------


def test_agency_codes_are_validated(store: AccountStore) -> None:
    store.create_agency("000.00.00.G22", "Bộ Nội vụ", actor=ACTOR)
    store.create_agency("G22.05", "Cục Văn thư và Lưu trữ nhà nước", actor=ACTOR)
    assert {"000.00.00.G22", "G22.05"} <= {a.code for a in store.list_agencies()}
    for bad in ("", "g22", "G22..01", "000.00.00.G22.", "x" * 40):
        with pytest.raises(AccountInvalid):
            store.create_agency(bad, "Tên", actor=ACTOR)
    with pytest.raises(AccountConflict):
        store.create_agency("G22.05", "Again", actor=ACTOR)
    with pytest.raises(AccountInvalid):
        store.create_agency("G22.06", "  ", actor=ACTOR)


def test_users_passwords_and_login(store: AccountStore, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    code = new_code()
    store.create_agency(code, "UBND phường", actor=ACTOR)
    for weak in ("", "   ", "short1!", "aaaaaaaaaaaaaaa", "nguyen.an-2026-long"):
        with pytest.raises(AccountInvalid):
            store.create_user(
                code, "nguyen.an", "Nguyễn Văn An", password=weak, roles=["official"], actor=ACTOR
            )
    with pytest.raises(AccountInvalid):
        store.create_user(code, "x y", "A", password=PASSWORD, roles=["official"], actor=ACTOR)
    with pytest.raises(AccountInvalid):
        store.create_user(code, "an2", "A", password=PASSWORD, roles=["boss"], actor=ACTOR)
    with pytest.raises(AccountNotFound):
        store.create_user("Z99", "an3", "A", password=PASSWORD, roles=["clerk"], actor=ACTOR)
    user_id = store.create_user(
        code,
        "Nguyen.An",
        "Nguyễn Văn An",
        password=PASSWORD,
        roles=["official", "clerk"],
        actor=ACTOR,
    )
    with pytest.raises(AccountConflict):
        store.create_user(code, "nguyen.an", "B", password=PASSWORD, roles=["clerk"], actor=ACTOR)
    principal = store.authenticate("NGUYEN.AN ", PASSWORD)
    assert principal.user_id == user_id
    assert principal.username == "nguyen.an"
    assert principal.agency == code
    assert principal.roles == {"official", "clerk"}
    assert principal.actor == f"user:nguyen.an@{code}"

    # wrong password, unknown user, disabled user: one error, one message
    messages = set()
    for username, password in (("nguyen.an", PASSWORD + "x"), ("nobody.here", PASSWORD)):
        with pytest.raises(AuthenticationFailed) as info:
            store.authenticate(username, password)
        messages.add(info.value.message("en"))
    store.set_disabled(user_id, True, agency=code, actor=ACTOR)
    with pytest.raises(AuthenticationFailed) as info:
        store.authenticate("nguyen.an", PASSWORD)
    messages.add(info.value.message("en"))
    assert len(messages) == 1
    store.set_disabled(user_id, False, agency=code, actor=ACTOR)
    assert store.authenticate("nguyen.an", PASSWORD).user_id == user_id

    actions = [(e.action, e.subject) for e in audit_rows(store)]
    assert ("user.create", f"user:{user_id}") in actions
    assert ("auth.login", f"user:{user_id}") in actions
    assert ("auth.login_failed", "login:nobody.here") in actions
    assert ("user.disable", f"user:{user_id}") in actions
    assert_no_secret(store, PASSWORD)
    assert all(PASSWORD not in r.getMessage() for r in caplog.records)


def test_failed_logins_lock_the_name_for_a_while(store: AccountStore, services: Services) -> None:
    code = new_code()
    users = make_agency_with_users(services, code, roles=["verifier"])
    principal, password = users["verifier"]
    for _ in range(store.max_failures):
        with pytest.raises(AuthenticationFailed):
            store.authenticate(principal.username, "wrong password!")
    with pytest.raises(LockedOut) as info:  # even the right password, while locked
        store.authenticate(principal.username, password)
    assert 0 < info.value.params["seconds"] <= store.lockout.total_seconds()
    # an unknown name locks the same way: a lockout says nothing about who exists
    for _ in range(store.max_failures):
        with pytest.raises(AuthenticationFailed):
            store.authenticate("ghost.user", "wrong password!")
    with pytest.raises(LockedOut):
        store.authenticate("ghost.user", "wrong password!")
    # the lock expires
    with store.catalog.session() as s:
        row = s.get(LoginThrottle, f"login:{principal.username}")
        assert row is not None
        row.locked_until = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    assert store.authenticate(principal.username, password).user_id == principal.user_id
    assert "auth.login_refused" in {e.action for e in audit_rows(store)}


# -- tokens -------------------------------------------------------------------------------------


def test_tokens_are_hashed_scoped_and_revocable(
    store: AccountStore, services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    code = new_code()
    make_agency_with_users(services, code, roles=["admin"])
    both, _ = make_user(services, code, f"both-{code.lower()}", ["official", "archivist"])
    token_id, token = store.create_token(
        both.user_id, "archive sync", roles=["archivist"], actor=ACTOR
    )
    assert token.startswith(f"kyso_{token_id}_")
    with store.catalog.session() as s:
        stored = s.execute(sa.text("SELECT secret_sha256 FROM api_tokens")).scalars().all()
    assert not any(token.split("_", 2)[2] in value for value in stored)

    principal = store.principal_for_token(token)
    assert principal is not None
    assert principal.via == "token" and principal.token_id == token_id
    assert principal.roles == {"archivist"}  # the token's roles, not all the user's
    assert principal.actor == f"token:{token_id}:{both.username}@{code}"
    assert store.get_token(token_id, agency=code).last_used_at is not None

    with pytest.raises(AccountInvalid):  # only roles the user holds
        store.create_token(both.user_id, "too much", roles=["admin"], actor=ACTOR)
    for bad in ("", "kyso_", f"kyso_{token_id}_" + "A" * 43, token + "x", "Bearer " + token):
        assert store.principal_for_token(bad) is None

    # a role taken from the user is taken from their tokens at once
    store.set_roles(both.user_id, ["official"], agency=code, actor=ACTOR)
    principal = store.principal_for_token(token)
    assert principal is not None and principal.roles == frozenset()
    store.set_roles(both.user_id, ["official", "archivist"], agency=code, actor=ACTOR)

    other = new_code()
    make_agency_with_users(services, other, roles=["admin"])
    with pytest.raises(AccountNotFound):  # another agency's token: not found
        store.revoke_token(token_id, agency=other, actor=ACTOR)
    assert store.principal_for_token(token) is not None
    store.revoke_token(token_id, agency=code, actor=ACTOR)
    assert store.principal_for_token(token) is None  # at once
    assert store.get_token(token_id, agency=code).revoked_at is not None

    second_id, second = store.create_token(both.user_id, "second", actor=ACTOR)
    assert store.principal_for_token(second) is not None
    store.set_disabled(both.user_id, True, agency=code, actor=ACTOR)
    assert store.principal_for_token(second) is None
    with pytest.raises(AccountConflict):
        store.create_token(both.user_id, "third", actor=ACTOR)

    assert [t.id for t in store.list_tokens(other)] == []
    assert {token_id, second_id} <= {t.id for t in store.list_tokens(code)}
    actions = {(e.action, e.subject) for e in audit_rows(store)}
    assert ("token.create", f"token:{token_id}") in actions
    assert ("token.revoke", f"token:{token_id}") in actions
    assert_no_secret(store, token, second, token.split("_", 2)[2])
    assert all(token not in r.getMessage() for r in caplog.records)


# -- sessions and tenancy -----------------------------------------------------------------------


def test_sessions_end_expire_and_follow_the_user(store: AccountStore, services: Services) -> None:
    code = new_code()
    users = make_agency_with_users(services, code, roles=["clerk", "admin"])
    clerk, _ = users["clerk"]
    session_id, csrf = store.create_session(clerk, hours=8)
    found = store.principal_for_session(session_id)
    assert found is not None and found[0].user_id == clerk.user_id and found[1] == csrf
    with store.catalog.session() as s:  # only the hash of the id is stored
        assert s.get(WebSession, session_id) is None
    store.end_session(session_id)
    assert store.principal_for_session(session_id) is None

    expired, _ = store.create_session(clerk, hours=-0.01)
    assert store.principal_for_session(expired) is None
    assert store.principal_for_session("not-a-session") is None
    assert store.principal_for_session("") is None

    live, _ = store.create_session(clerk)
    store.set_disabled(clerk.user_id, True, agency=code, actor=ACTOR)
    store.set_disabled(clerk.user_id, False, agency=code, actor=ACTOR)
    assert store.principal_for_session(live) is None  # disabling ended it
    assert_no_secret(store, session_id, live, csrf)


def test_every_lookup_is_scoped_to_the_agency(store: AccountStore, services: Services) -> None:
    a, b = new_code(), new_code()
    users_a = make_agency_with_users(services, a, roles=["admin", "official"])
    users_b = make_agency_with_users(services, b, roles=["admin", "official"])
    official_b = users_b["official"][0]
    with pytest.raises(AccountNotFound):
        store.get_user(official_b.user_id, agency=a)
    with pytest.raises(AccountNotFound):
        store.set_roles(official_b.user_id, ["clerk"], agency=a, actor=ACTOR)
    with pytest.raises(AccountNotFound):
        store.set_disabled(official_b.user_id, True, agency=a, actor=ACTOR)
    with pytest.raises(AccountNotFound):
        store.user_by_name(official_b.username, agency=a)
    assert {u.username for u in store.list_users(a)} == {
        users_a["admin"][0].username,
        users_a["official"][0].username,
    }
    assert store.get_user(official_b.user_id, agency=b).roles == ("official",)


# -- keys ---------------------------------------------------------------------------------------


def test_keys_are_bound_once(store: AccountStore, services: Services) -> None:
    code = new_code()
    users = make_agency_with_users(services, code, roles=["official", "clerk"], seal_key=True)
    official, clerk = users["official"][0], users["clerk"][0]
    seal = store.agency_key(code)
    assert seal is not None and seal.startswith("file:")
    with pytest.raises(AccountConflict):  # an agency's seal key is nobody's personal key
        store.bind_key(official.user_id, seal, actor=ACTOR)
    store.bind_key(official.user_id, "pkcs11:token=kyso;object=an", actor=ACTOR)
    store.bind_key(official.user_id, "pkcs11:token=kyso;object=an", actor=ACTOR)  # idempotent
    with pytest.raises(AccountConflict):
        store.bind_key(clerk.user_id, "pkcs11:token=kyso;object=an", actor=ACTOR)
    with pytest.raises(AccountConflict):
        store.set_agency_key(code, "pkcs11:token=kyso;object=an", actor=ACTOR)
    other = new_code()
    store.create_agency(other, "Khác", actor=ACTOR)
    with pytest.raises(AccountConflict):  # another agency's seal key
        store.set_agency_key(other, seal, actor=ACTOR)
    assert store.keys_of(official.user_id) == ["pkcs11:token=kyso;object=an"]
    assert [b["key"] for b in store.key_bindings(code)] == ["pkcs11:token=kyso;object=an"]
    assert store.key_bindings(other) == []
    with pytest.raises(KeyNotFoundError):
        canonical_key_ref(services, "no-such-key")
    with pytest.raises(AccountInvalid):  # the PKI's own keys are never bound
        canonical_key_ref(services, "kyso-issuing-ca")
    assert canonical_key_ref(services, seal.removeprefix("file:")) == seal
    store.unbind_key(official.user_id, "pkcs11:token=kyso;object=an", agency=code, actor=ACTOR)
    assert store.keys_of(official.user_id) == []
    actions = {e.action for e in audit_rows(store)}
    assert {"key.bind", "key.unbind", "agency.seal_key"} <= actions


def test_personal_key_needs_the_pin_every_time(
    store: AccountStore, services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    code = new_code()
    users = make_agency_with_users(services, code, roles=["official", "clerk"])
    official, clerk = users["official"][0], users["clerk"][0]
    ref = issue_key(services, official)
    assert ref.startswith("personal:") and store.keys_of(official.user_id) == [ref]
    label = ref.removeprefix("personal:")

    handle = open_signing_key(services, official, ref, PIN)
    assert handle.uri == ref
    assert handle.certificate.subject.rfc4514_string().find("Chánh Văn phòng") >= 0
    assert handle.sign(b"data")  # a usable key
    assert open_signing_key(services, official, label, PIN).certificate == handle.certificate

    for pin, slug in (("", "pin-required"), ("135799", "bad-pin")):
        with pytest.raises(Problem) as info:
            open_signing_key(services, official, ref, pin)
        assert (info.value.status, info.value.slug) == (403, slug)
    failures = [e for e in audit_rows(store) if e.action == "key.pin_failed"]
    assert failures and failures[-1].actor == official.actor
    assert "135799" not in failures[-1].details_json

    # the server alone cannot open it: not with its own passphrase, not through its key stores
    with pytest.raises(WrongPassphraseError):
        FileKeyStore(personal_keys_dir(services), passphrase=lambda: PASSPHRASE.encode()).load(
            label
        )
    with pytest.raises(KeyNotFoundError):
        services.keys.resolve(label)

    # only the key's owner, and only an official
    with pytest.raises(Problem) as info:
        open_signing_key(services, clerk, ref, PIN)
    assert info.value.status == 403
    second, _ = make_user(services, code, f"second-{code.lower()}", ["official"])
    with pytest.raises(Problem) as info:
        open_signing_key(services, second, ref, PIN)
    assert (info.value.status, info.value.slug) == (404, "not-found")

    # wrong PINs in a row lock the PIN for a while, then the right one works again
    for _ in range(store.max_failures - 1):
        with pytest.raises(Problem):
            open_signing_key(services, official, ref, "999999x")
    with pytest.raises(Problem) as info:
        open_signing_key(services, official, ref, PIN)
    assert (info.value.status, info.value.slug) == (429, "rate-limited")
    with store.catalog.session() as s:
        s.execute(sa.delete(LoginThrottle).where(LoginThrottle.name == f"pin:{official.user_id}"))
    assert open_signing_key(services, official, ref, PIN).certificate == handle.certificate
    assert_no_secret(store, PIN, "135799", "999999x")
    assert all(PIN not in r.getMessage() for r in caplog.records)


def test_server_held_keys_check_the_pin_hash(store: AccountStore, services: Services) -> None:
    code = new_code()
    users = make_agency_with_users(services, code, roles=["official", "clerk"], seal_key=True)
    official, clerk = users["official"][0], users["clerk"][0]
    # a key held by the server (as on a PKCS#11 token) bound to the official
    issued = services.pki.issue(
        kind="person",
        subject=identity.person_subject("Trần Thị Bình", ids=["CCCD:001190000777"]),
        label=f"server-held-{code.lower().replace('.', '-')}",
        key_type="ec-p256",
        actor=ACTOR,
    )
    key_ref = canonical_key_ref(services, issued.label)
    store.bind_key(official.user_id, key_ref, actor=ACTOR)
    with pytest.raises(Problem) as info:
        open_signing_key(services, official, key_ref, "000111")
    assert info.value.slug == "bad-pin"
    assert open_signing_key(services, official, key_ref, PIN).uri == key_ref

    # the agency's seal key: clerks only; an agency without one answers 409
    assert open_agency_key(services, clerk).uri == store.agency_key(code)
    with pytest.raises(Problem) as info:
        open_agency_key(services, official)
    assert info.value.status == 403
    bare = new_code()
    lone = make_agency_with_users(services, bare, roles=["clerk"])["clerk"][0]
    with pytest.raises(Problem) as info:
        open_agency_key(services, lone)
    assert info.value.status == 409


def test_the_audit_chain_stays_intact(store: AccountStore) -> None:
    with store.catalog.session() as s:
        result = audit.verify(s, [])
    assert result.ok, [p.message("en") for p in result.problems]
    assert result.events > 10


def test_concurrent_failures_are_counted_without_errors(store: AccountStore) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def attempt(_: int) -> str:
        try:
            store.authenticate("racing.ghost", "wrong password!")
        except AuthenticationFailed:
            return "failed"
        except LockedOut:
            return "locked"
        return "ok"

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(attempt, range(3 * store.max_failures)))
    assert "ok" not in results
    assert results.count("locked") >= 1  # no lost counts, no primary-key race
    with pytest.raises(LockedOut):
        store.authenticate("racing.ghost", "wrong password!")


def test_a_token_key_bound_to_a_user_needs_their_pin(
    tmp_path: Path, dev_services: Services
) -> None:
    """A personal key on a PKCS#11 token (the server holds the token PIN): the user's own
    signing PIN is still asked for and checked against its argon2 hash, every time."""
    from tests.conftest import require_tool
    from tests.softhsm import init_token

    require_tool("softhsm2-util")
    hsm = init_token(tmp_path / "hsm", label="kyso-accounts")
    with catalog_on("sqlite", tmp_path) as catalog:
        services = Services(
            make_settings(
                dev_services.settings.data_dir,
                pkcs11_module=hsm.module,
                pkcs11_token=hsm.label,
                pkcs11_pin=hsm.pin,
            )
        )
        with_catalog(services, catalog).accounts.hasher = FAST_HASHER
        official = make_agency_with_users(services, "P11.01", roles=["official"])["official"][0]
        assert services.token is not None
        issued = services.pki.issue(
            kind="person",
            subject=identity.person_subject("Phạm Thị Dung", ids=["CCCD:001190000555"]),
            label="p11-dung",
            key_type="ec-p256",
            token=services.token,
            actor=ACTOR,
        )
        ref = canonical_key_ref(services, "p11-dung")
        assert ref == issued.key_uri and ref.startswith("pkcs11:")
        services.accounts.bind_key(official.user_id, ref, actor=ACTOR)
        try:
            for pin, slug in (("", "pin-required"), (hsm.pin, "bad-pin"), ("864200", "bad-pin")):
                with pytest.raises(Problem) as info:
                    open_signing_key(services, official, "p11-dung", pin)
                assert info.value.slug == slug
            handle = open_signing_key(services, official, "p11-dung", PIN)
            assert handle.uri == ref and handle.sign(b"data")
            events = [e.action for e in audit_rows(services.accounts)]
            assert events.count("key.pin_failed") == 2 and events[-1] == "key.unlock"
        finally:
            services.token.close()
