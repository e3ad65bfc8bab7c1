"""First-run setup and the administration pages over plain HTTP: the setup code (required,
one time, hashed on disk), the redirects before setup, admin-only pages, the agency scope of
user and token ids, CSRF, and what is audited (never a password, PIN or token)."""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from kyso.api.services import Services
from kyso.api.web import setup as web_setup
from kyso.api.web.admin import key_labels
from kyso.archive.audit import AuditEvent
from tests.api.service_helpers import fast_accounts
from tests.conftest import make_settings

AGENCY = "000.00.00.H51"
OTHER = "000.00.00.H52"
ADMIN = "quantri"
ADMIN_PASSWORD = "Mật khẩu quản trị rất dài"
CLERK_PASSWORD = "Mật khẩu văn thư rất dài"
OFFICIAL_PASSWORD = "Mật khẩu người ký rất dài"
PIN = "135792"


def csrf_in(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None, html[:500]
    return found.group(1)


@dataclass
class Instance:
    services: Services
    client: TestClient
    code: str = ""

    def new_client(self) -> TestClient:
        client = TestClient(
            self.client.app, headers={"Accept-Language": "vi"}, follow_redirects=False
        )
        return client


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    """A kyso with a PKI and no agency at all, as a newcomer starts it."""
    from kyso.api.app import create_app

    settings = make_settings(
        tmp_path_factory.mktemp("admin") / "data", ca_key_type="ec-p256", locale="vi"
    )
    services = Services(settings)
    services.ensure_pki()
    fast_accounts(services)
    app = create_app(services=services)
    with TestClient(app, headers={"Accept-Language": "vi"}, follow_redirects=False) as client:
        yield Instance(services, client)
    jobs = services.__dict__.get("jobs")
    if jobs is not None:
        jobs.close()


def log_in(inst: Instance, username: str, password: str) -> tuple[TestClient, str]:
    """A new client logged in as ``username``; returns it and its session's CSRF token."""
    client = inst.new_client()
    form = client.get("/login")
    assert form.status_code == 200, form.text[:300]
    reply = client.post(
        "/login",
        data={
            "username": username,
            "password": password,
            "csrf_token": csrf_in(form.text),
            "next": "/",
        },
    )
    assert reply.status_code == 303, reply.text[:300]
    return client, csrf_in(client.get("/").text)


def setup_fields(inst: Instance, **changes: str) -> dict[str, str]:
    fields = {
        "setup_code": inst.code,
        "agency_code": AGENCY,
        "agency_name": "Ủy ban nhân dân xã Thử Nghiệm",
        "tax_code": "0101234567",
        "username": ADMIN,
        "full_name": "Trần Thị Quản Trị",
        "password": ADMIN_PASSWORD,
        "password_again": ADMIN_PASSWORD,
    }
    fields.update(changes)
    return fields


def events(services: Services, action: str) -> list[AuditEvent]:
    with services.accounts.catalog.session() as s:
        return list(s.scalars(sa.select(AuditEvent).where(AuditEvent.action == action)))


# -- before setup ---------------------------------------------------------------------------------


def test_without_agencies_the_start_and_login_pages_lead_to_setup(instance: Instance) -> None:
    for path in ("/", "/login", "/login?next=/search"):
        reply = instance.client.get(path)
        assert reply.status_code == 303 and reply.headers["location"] == "/setup", path
    page = instance.client.get("/setup")
    assert page.status_code == 200
    assert "Thiết lập lần đầu" in page.text
    assert "Chưa có mã thiết lập" in page.text  # kyso serve has not made one yet
    assert page.headers["x-frame-options"] == "DENY"


def test_the_setup_code_is_made_once_per_start_and_only_its_hash_is_kept(
    instance: Instance,
) -> None:
    first = web_setup.ensure_setup_code(instance.services)
    code = web_setup.ensure_setup_code(instance.services)  # a restart: a new code
    assert first and code and first != code
    assert re.fullmatch(r"([A-Z2-9]{4}-){3}[A-Z2-9]{4}", code)
    path = web_setup.setup_code_path(instance.services)
    assert path == instance.services.settings.data_dir / "setup-code"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = path.read_text()
    assert code not in stored and code.replace("-", "") not in stored
    assert web_setup.check_setup_code(instance.services, code)
    assert web_setup.check_setup_code(instance.services, code.lower().replace("-", " "))
    assert not web_setup.check_setup_code(instance.services, first)
    instance.code = code
    assert "Chưa có mã thiết lập" not in instance.client.get("/setup").text


def test_setup_needs_its_form_cookie(instance: Instance) -> None:
    client = instance.new_client()  # no cookie from GET /setup: a form posted from elsewhere
    token = csrf_in(instance.client.get("/setup").text)
    reply = client.post("/setup", data={**setup_fields(instance), "csrf_token": token})
    assert reply.status_code == 403
    assert instance.services.accounts.list_agencies() == []


def test_setup_refuses_a_wrong_code_and_audits_it(instance: Instance) -> None:
    token = csrf_in(instance.client.get("/setup").text)
    for wrong in ("", "AAAA-BBBB-CCCC-DDDD"):
        reply = instance.client.post(
            "/setup", data={**setup_fields(instance, setup_code=wrong), "csrf_token": token}
        )
        assert reply.status_code == 403
        assert "Mã thiết lập không đúng" in reply.text
    assert instance.services.accounts.list_agencies() == []
    refused = events(instance.services, "setup.code_refused")
    assert len(refused) == 2
    assert all("AAAA" not in e.details_json for e in refused)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"agency_code": "not a code"}, "not a code"),
        ({"username": "Tên Có Dấu"}, ""),
        ({"password": "ngắn", "password_again": "ngắn"}, ""),
        ({"password_again": "một mật khẩu khác hẳn"}, "không khớp"),
        ({"tax_code": "001090000001"}, ""),  # a person's number is no agency's
    ],
)
def test_setup_checks_every_field_before_creating_anything(
    instance: Instance, changes: dict[str, str], message: str
) -> None:
    token = csrf_in(instance.client.get("/setup").text)
    reply = instance.client.post(
        "/setup", data={**setup_fields(instance, **changes), "csrf_token": token}
    )
    assert reply.status_code == 422, reply.text[:500]
    assert 'role="alert"' in reply.text and message in reply.text
    assert ADMIN_PASSWORD not in reply.text
    assert instance.services.accounts.list_agencies() == []
    assert web_setup.setup_code_path(instance.services).is_file()
    assert instance.services.pki.records()[-1].kind != "org"  # no seal key issued either


def test_setup_creates_the_agency_its_seal_key_and_the_admin_once(instance: Instance) -> None:
    services = instance.services
    token = csrf_in(instance.client.get("/setup").text)
    reply = instance.client.post("/setup", data={**setup_fields(instance), "csrf_token": token})
    assert reply.status_code == 303, reply.text[:500]
    assert reply.headers["location"] == "/login?done=setup_complete"
    [agency] = services.accounts.list_agencies()
    assert agency.code == AGENCY and agency.seal_key is not None
    seal = services.keys.resolve(agency.seal_key)
    assert "Ủy ban nhân dân xã Thử Nghiệm" in seal.certificate.subject.rfc4514_string()
    assert services.image_path(seal.label).is_file()  # the seal is drawn
    admin = services.accounts.user_by_name(ADMIN)
    assert admin.roles == ("admin",) and admin.agency == AGENCY
    assert not web_setup.setup_code_path(services).exists()
    [done] = events(services, "setup.complete")
    assert done.subject == f"agency:{AGENCY}" and ADMIN_PASSWORD not in done.details_json
    assert events(services, "agency.create") and events(services, "user.create")

    # once: the page is gone, the code too, and the start page leads to the login page
    assert instance.client.get("/setup").status_code == 404
    again = instance.client.post("/setup", data={**setup_fields(instance), "csrf_token": token})
    assert again.status_code == 404
    assert web_setup.ensure_setup_code(services) is None
    assert not web_setup.setup_code_path(services).exists()
    start = instance.client.get("/")
    assert start.status_code == 303 and start.headers["location"].startswith("/login")
    assert instance.client.get("/login").status_code == 200
    assert len(services.accounts.list_agencies()) == 1


# -- administration -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def admin(instance: Instance) -> tuple[TestClient, str]:
    assert instance.services.accounts.list_agencies(), "setup ran first"
    return log_in(instance, ADMIN, ADMIN_PASSWORD)


@pytest.fixture(scope="module")
def other_agency(instance: Instance) -> dict[str, int]:
    """Another agency with an admin and an official."""
    accounts = instance.services.accounts
    accounts.create_agency(OTHER, "Sở Khác", actor="test")
    ids = {}
    for name, roles in (("admin-khac", ["admin"]), ("official-khac", ["official"])):
        ids[name] = accounts.create_user(
            OTHER, name, f"Người {name}", password=OFFICIAL_PASSWORD, roles=roles, actor="test"
        )
    return ids


def create_user(
    client: TestClient, csrf: str, username: str, roles: list[str], password: str
) -> int:
    reply = client.post(
        "/admin/users",
        data={
            "csrf_token": csrf,
            "username": username,
            "full_name": f"Nguyễn Văn {username.title()}",
            "password": password,
            "password_again": password,
            "roles": roles,
        },
    )
    assert reply.status_code == 303, reply.text[:500]
    found = re.fullmatch(r"/admin/users/(\d+)\?done=admin_user_created", reply.headers["location"])
    assert found is not None
    return int(found.group(1))


def test_the_admin_sees_the_menu_and_creates_users(
    instance: Instance, admin: tuple[TestClient, str]
) -> None:
    client, csrf = admin
    home = client.get("/")
    assert 'href="/admin/users"' in home.text and "Quản trị" in home.text
    page = client.get("/admin/users")
    assert page.status_code == 200 and ADMIN in page.text
    for label in ("Tên đăng nhập", "Họ và tên", "Mật khẩu ban đầu", "Người ký", "Văn thư"):
        assert label in page.text
    clerk_id = create_user(client, csrf, "vanthu", ["clerk"], CLERK_PASSWORD)
    official_id = create_user(client, csrf, "nguoiky", ["official"], OFFICIAL_PASSWORD)
    accounts = instance.services.accounts
    assert accounts.get_user(clerk_id).roles == ("clerk",)
    assert accounts.get_user(official_id).agency == AGENCY
    listing = client.get("/admin/users").text
    assert "vanthu" in listing and "nguoiky" in listing
    # a duplicate name, a weak password: said on the page, nothing created
    for username, password, status in (
        ("vanthu", CLERK_PASSWORD, 409),
        ("moi", "ngắn", 422),
    ):
        reply = client.post(
            "/admin/users",
            data={
                "csrf_token": csrf,
                "username": username,
                "full_name": "Ai Đó",
                "password": password,
                "password_again": password,
                "roles": ["clerk"],
            },
        )
        assert reply.status_code == status and 'role="alert"' in reply.text
        assert password not in reply.text
    assert len(accounts.list_users(AGENCY)) == 3


def test_admin_pages_are_for_admins_only(instance: Instance, admin: tuple[TestClient, str]) -> None:
    anonymous = instance.new_client()
    reply = anonymous.get("/admin/users")
    assert reply.status_code == 303 and reply.headers["location"].startswith("/login?next=")
    clerk, csrf = log_in(instance, "vanthu", CLERK_PASSWORD)
    assert "/admin/users" not in clerk.get("/").text  # no menu entry
    clerk_id = instance.services.accounts.user_by_name("vanthu").id
    for path in ("/admin/users", "/admin/tokens", f"/admin/users/{clerk_id}"):
        assert clerk.get(path).status_code == 403, path
    reply = clerk.post(
        f"/admin/users/{clerk_id}/roles", data={"csrf_token": csrf, "roles": ["admin", "clerk"]}
    )
    assert reply.status_code == 403
    reply = clerk.post("/admin/tokens", data={"csrf_token": csrf, "name": "x"})
    assert reply.status_code == 403
    assert instance.services.accounts.get_user(clerk_id).roles == ("clerk",)


def test_forms_without_the_session_csrf_token_change_nothing(
    instance: Instance, admin: tuple[TestClient, str]
) -> None:
    client, _ = admin
    accounts = instance.services.accounts
    clerk_id = accounts.user_by_name("vanthu").id
    for path, data in (
        ("/admin/users", {"username": "ke-gian", "full_name": "Kẻ Gian", "roles": ["admin"]}),
        (f"/admin/users/{clerk_id}/roles", {"roles": ["admin"]}),
        (f"/admin/users/{clerk_id}/state", {"action": "disable"}),
        ("/admin/tokens", {"name": "lấy trộm"}),
    ):
        for token in (None, "sai"):
            fields = dict(data) if token is None else {**data, "csrf_token": token}
            reply = client.post(path, data=fields)
            assert reply.status_code == 403, path
    assert accounts.get_user(clerk_id).roles == ("clerk",)
    assert not accounts.get_user(clerk_id).disabled
    assert accounts.list_tokens(AGENCY) == []
    with pytest.raises(Exception, match="ke-gian"):
        accounts.user_by_name("ke-gian")


def test_roles_and_state_change_and_the_admin_cannot_lock_themselves_out(
    instance: Instance, admin: tuple[TestClient, str]
) -> None:
    client, csrf = admin
    accounts = instance.services.accounts
    clerk_id = accounts.user_by_name("vanthu").id
    page = client.get(f"/admin/users/{clerk_id}")
    assert page.status_code == 200 and "Lưu vai trò" in page.text
    reply = client.post(
        f"/admin/users/{clerk_id}/roles",
        data={"csrf_token": csrf, "roles": ["clerk", "archivist"]},
    )
    assert reply.status_code == 303
    assert accounts.get_user(clerk_id).roles == ("archivist", "clerk")
    reply = client.post(f"/admin/users/{clerk_id}/roles", data={"csrf_token": csrf})
    assert reply.status_code == 422  # at least one role
    clerk, _ = log_in(instance, "vanthu", CLERK_PASSWORD)
    reply = client.post(
        f"/admin/users/{clerk_id}/state", data={"csrf_token": csrf, "action": "disable"}
    )
    assert reply.status_code == 303 and accounts.get_user(clerk_id).disabled
    assert clerk.get("/").status_code == 303  # their session ended at once
    reply = client.post(
        f"/admin/users/{clerk_id}/state", data={"csrf_token": csrf, "action": "enable"}
    )
    assert reply.status_code == 303 and not accounts.get_user(clerk_id).disabled
    client.post(f"/admin/users/{clerk_id}/roles", data={"csrf_token": csrf, "roles": ["clerk"]})

    me = accounts.user_by_name(ADMIN).id
    reply = client.post(f"/admin/users/{me}/roles", data={"csrf_token": csrf, "roles": ["clerk"]})
    assert reply.status_code == 409 and "quản trị" in reply.text
    reply = client.post(f"/admin/users/{me}/state", data={"csrf_token": csrf, "action": "disable"})
    assert reply.status_code == 409
    assert accounts.get_user(me).roles == ("admin",) and not accounts.get_user(me).disabled
    assert events(instance.services, "user.roles") and events(instance.services, "user.disable")


def test_another_agencys_users_and_tokens_are_not_found(
    instance: Instance, admin: tuple[TestClient, str], other_agency: dict[str, int]
) -> None:
    client, csrf = admin
    accounts = instance.services.accounts
    theirs = other_agency["official-khac"]
    _, their_token = accounts.create_token(other_agency["admin-khac"], "của họ", actor="test")
    their_token_id = accounts.list_tokens(OTHER)[0].id
    for path in (f"/admin/users/{theirs}", f"/admin/users/{theirs}/key", "/admin/users/999999"):
        reply = client.get(path)
        assert reply.status_code == 404, path
        assert "Người official-khac" not in reply.text
    for path, data in (
        (f"/admin/users/{theirs}/roles", {"roles": ["admin"]}),
        (f"/admin/users/{theirs}/state", {"action": "disable"}),
        (f"/admin/users/{theirs}/key", {"id_number": "001090000123", "pin": PIN, "pin_again": PIN}),
        (f"/admin/tokens/{their_token_id}/revoke", {}),
    ):
        reply = client.post(path, data={**data, "csrf_token": csrf})
        assert reply.status_code == 404, path
    assert accounts.get_user(theirs).roles == ("official",)
    assert not accounts.get_user(theirs).disabled and not accounts.get_user(theirs).keys
    assert accounts.principal_for_token(their_token) is not None  # still works
    listing = client.get("/admin/users").text
    assert "official-khac" not in listing
    assert "của họ" not in client.get("/admin/tokens").text


def test_issuing_an_officials_key_with_their_pin(
    instance: Instance, admin: tuple[TestClient, str]
) -> None:
    client, csrf = admin
    services = instance.services
    accounts = services.accounts
    official = accounts.user_by_name("nguoiky")
    clerk = accounts.user_by_name("vanthu")
    form = client.get(f"/admin/users/{official.id}/key")
    assert form.status_code == 200
    for label in ("Số định danh cá nhân (CCCD)", "Chức vụ", "Mã PIN ký số", "Nhập lại mã PIN"):
        assert f">{label}</label>" in form.text
    fields = {"csrf_token": csrf, "id_number": "001090000777", "title": "Chủ tịch"}
    reply = client.post(
        f"/admin/users/{official.id}/key", data={**fields, "pin": PIN, "pin_again": "135790"}
    )
    assert reply.status_code == 422 and "không khớp" in reply.text
    reply = client.post(
        f"/admin/users/{official.id}/key", data={**fields, "pin": "111", "pin_again": "111"}
    )
    assert reply.status_code == 422  # too weak
    assert accounts.get_user(official.id).keys == ()
    # a clerk gets no personal signing key
    reply = client.post(
        f"/admin/users/{clerk.id}/key", data={**fields, "pin": PIN, "pin_again": PIN}
    )
    assert reply.status_code == 409 and accounts.get_user(clerk.id).keys == ()

    reply = client.post(
        f"/admin/users/{official.id}/key", data={**fields, "pin": PIN, "pin_again": PIN}
    )
    assert reply.status_code == 303, reply.text[:500]
    assert reply.headers["location"] == f"/admin/users/{official.id}?done=admin_key_issued"
    after = accounts.get_user(official.id)
    [ref] = after.keys
    assert ref.startswith("personal:") and after.has_pin
    assert accounts.check_pin(official.id, PIN)
    page = client.get(f"/admin/users/{official.id}").text
    assert "Nguyễn Văn Nguoiky · hiệu lực đến" in page and ref not in page
    listing = client.get("/admin/users").text
    assert "Người ký · 1 khóa ký" in listing and "built-in" not in listing
    label = key_labels(services, [ref], "en")[ref]
    assert label.startswith("Nguyễn Văn Nguoiky · valid until ")
    assert services.image_path(ref.split(":", 1)[1]).is_file()  # a signature to draw
    # the PIN is nowhere in clear: not in the audit log, not in the key file
    with accounts.catalog.session() as s:
        logged = " ".join(s.scalars(sa.select(AuditEvent.details_json)))
    assert PIN not in logged and events(services, "key.bind")
    key_file = Path(services.settings.data_dir) / "personal-keys" / f"{ref.split(':', 1)[1]}.p12"
    assert PIN.encode() not in key_file.read_bytes()
    # a second key needs the same PIN
    reply = client.post(
        f"/admin/users/{official.id}/key",
        data={**fields, "pin": "975310", "pin_again": "975310"},
    )
    assert reply.status_code == 403 and len(accounts.get_user(official.id).keys) == 1


def test_tokens_are_shown_once_listed_and_revoked(
    instance: Instance, admin: tuple[TestClient, str]
) -> None:
    client, csrf = admin
    accounts = instance.services.accounts
    reply = client.post(
        "/admin/tokens", data={"csrf_token": csrf, "name": "Hệ thống QLVB", "roles": ["admin"]}
    )
    assert reply.status_code == 200
    found = re.search(r'value="(kyso_\d+_[A-Za-z0-9_-]+)"', reply.text)
    assert found is not None
    plaintext = found.group(1)
    principal = accounts.principal_for_token(plaintext)
    assert principal is not None and principal.username == ADMIN
    assert reply.headers["cache-control"] == "no-store"
    listing = client.get("/admin/tokens")
    assert "Hệ thống QLVB" in listing.text and plaintext not in listing.text
    [info] = [tk for tk in accounts.list_tokens(AGENCY) if tk.name == "Hệ thống QLVB"]
    # roles beyond the admin's own are refused
    reply = client.post(
        "/admin/tokens", data={"csrf_token": csrf, "name": "quá quyền", "roles": ["clerk"]}
    )
    assert reply.status_code == 422
    reply = client.post("/admin/tokens", data={"csrf_token": csrf, "name": "không vai trò"})
    assert reply.status_code == 422  # no role ticked: no token with every role by surprise
    assert len(accounts.list_tokens(AGENCY)) == 1
    reply = client.post(f"/admin/tokens/{info.id}/revoke", data={"csrf_token": csrf})
    assert reply.status_code == 303
    assert accounts.principal_for_token(plaintext) is None
    assert "Đã thu hồi" in client.get("/admin/tokens").text
    assert events(instance.services, "token.revoke")


def test_the_admin_pages_speak_english_too(
    instance: Instance, admin: tuple[TestClient, str]
) -> None:
    client, _ = admin
    page = client.get("/admin/users?lang=en")
    assert page.status_code == 200 and '<html lang="en">' in page.text
    assert "Add a user" in page.text and "Administration" in page.text
    client.get("/admin/users?lang=vi")
