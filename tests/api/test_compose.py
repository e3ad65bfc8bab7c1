"""The production stack's files stay honest: no Docker engine runs here, so docker-compose.yml,
the Dockerfile, .env.example and docs/deploy.md are checked against the code they run."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from kyso.api.celery_app import BeatSettings
from kyso.api.cli import app as cli_app
from kyso.api.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
DEPLOY = ROOT / "docs" / "deploy.md"

SETTINGS = {f"KYSO_{name.upper()}" for name in Settings.model_fields}
BEAT_SETTINGS = {f"KYSO_BEAT_{name.upper()}" for name in BeatSettings.model_fields}
VARIABLE = re.compile(r"\$\$?\{?(KYSO_[A-Z0-9_]+)")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _env_file() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def _known(name: str) -> bool:
    return name in BEAT_SETTINGS if name.startswith("KYSO_BEAT_") else name in SETTINGS


def test_every_kyso_variable_is_a_setting(services: dict[str, dict[str, Any]]) -> None:
    used: set[str] = set()
    for service in services.values():
        used.update(k for k in _environment(service) if k.startswith("KYSO_"))
    used.update(VARIABLE.findall(COMPOSE.read_text(encoding="utf-8")))  # ${…} and $$… uses
    used.update(VARIABLE.findall(DOCKERFILE.read_text(encoding="utf-8")))
    used.update(k for k in _env_file() if k.startswith("KYSO_"))
    assert len(used) > 10  # the scan found them at all
    unknown = sorted(name for name in used if not _known(name))
    assert not unknown, f"not fields of Settings/BeatSettings: {unknown}"


def test_the_env_example_is_production_and_defines_what_compose_requires() -> None:
    env = _env_file()
    assert env["KYSO_ENVIRONMENT"] == "production"
    assert len(env["KYSO_SECRET_KEY"]) >= 32  # the length Services.secret_key demands
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", COMPOSE.read_text(encoding="utf-8")))
    assert required and required <= set(env), sorted(required - set(env))
    # values read from the example validate as settings (types, enumerations)
    kyso = {k.removeprefix("KYSO_").lower(): v for k, v in env.items() if k.startswith("KYSO_")}
    settings = Settings.model_validate({k: v for k, v in kyso.items() if not k.startswith("beat_")})
    BeatSettings.model_validate(
        {k.removeprefix("beat_"): v for k, v in kyso.items() if k.startswith("beat_")}
    )
    assert settings.environment == "production" and settings.log_format == "json"


def _one_shot(service: dict[str, Any]) -> bool:
    return str(service.get("restart", "no")) == "no"


def test_every_service_has_a_healthcheck_or_is_a_one_shot_waited_for(
    services: dict[str, dict[str, Any]],
) -> None:
    dependents: dict[str, list[str]] = {}
    for service in services.values():
        for dep, spec in (service.get("depends_on") or {}).items():
            dependents.setdefault(dep, []).append(spec["condition"])
    for name, service in services.items():
        check = service.get("healthcheck") or {}
        if _one_shot(service):
            # a job that exits: the others wait for it to finish well, not to be healthy
            assert dependents.get(name), f"{name}: a one-shot nobody waits for"
            assert set(dependents[name]) == {"service_completed_successfully"}, name
        else:
            assert check.get("test") and not check.get("disable"), f"{name}: no healthcheck"
            assert check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_depends_on_names_real_services_with_conditions(
    services: dict[str, dict[str, Any]],
) -> None:
    conditions = {"service_healthy", "service_completed_successfully", "service_started"}
    for name, service in services.items():
        deps = service.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on without conditions"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert spec.get("condition") in conditions, f"{name} → {dep}"
            if spec["condition"] == "service_healthy":
                assert services[dep].get("healthcheck", {}).get("test"), f"{dep} has no check"
    for name in ("api", "worker", "beat"):
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy"
        assert deps["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_the_stack_has_its_parts(services: dict[str, dict[str, Any]]) -> None:
    assert {"api", "worker", "beat", "postgres", "redis", "minio", "createbuckets", "softhsm"} <= (
        set(services)
    )
    minio = " ".join(services["minio"]["command"])
    assert "/data{1...4}" in minio  # erasure-coded: object lock works
    buckets = "".join(services["createbuckets"]["command"])
    assert "mc mb" in buckets and "--with-lock" in buckets
    assert "--init-token" in " ".join(services["softhsm"]["command"])
    for name in ("api", "worker", "beat", "migrate"):
        env = _environment(services[name])
        assert env["KYSO_ENVIRONMENT"] == "production"
        assert env["KYSO_ARCHIVE_DB"].startswith("postgresql://")
        assert (
            env["KYSO_ARCHIVE_STORE"].startswith("s3://")
            and "@minio:9000/" in (env["KYSO_ARCHIVE_STORE"])
        )
        assert env["KYSO_BROKER_URL"].startswith("redis://redis:")
        assert env["KYSO_PKCS11_TOKEN"]
        # no secret written in the compose file itself: they come from .env
        for secret in ("KYSO_SECRET_KEY", "KYSO_KEY_PASSPHRASE", "KYSO_PKCS11_PIN"):
            assert secret not in env, f"{name}: {secret} belongs in .env"
        assert services[name]["env_file"] == ".env"


def test_worker_and_beat_run_the_celery_app(services: dict[str, dict[str, Any]]) -> None:
    modules = set()
    for name, role in (("worker", "worker"), ("beat", "beat")):
        command = services[name]["command"]
        assert command[0] == "celery" and role in command, command
        modules.add(command[command.index("-A") + 1])
    assert modules == {"kyso.api.celery_app"}
    # what `celery -A kyso.api.celery_app` does to find the app, in a process of its own
    env = {k: v for k, v in os.environ.items() if not k.startswith("KYSO_")}
    env["KYSO_BROKER_URL"] = "redis://redis:6379/0"
    probe = (
        "from celery import Celery; from celery.app.utils import find_app; "
        "app = find_app('kyso.api.celery_app'); assert isinstance(app, Celery); "
        "print(sorted(t for t in app.tasks if t.startswith('kyso.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "kyso.jobs.item" in out.stdout


def _cli_command_exists(words: list[str]) -> bool:
    command: Any = typer.main.get_command(cli_app)
    for word in words:
        if word.startswith("-") or not hasattr(command, "commands"):
            break
        command = command.commands.get(word)
        if command is None:
            return False
    return not hasattr(command, "commands")  # a runnable command, not a bare group


def _kyso_invocations(service: dict[str, Any]) -> list[list[str]]:
    command = service.get("command")
    if not command:
        return []
    if isinstance(command, list) and command[0] in ("sh", "/bin/sh", "bash") and "-c" in command:
        text = command[command.index("-c") + 1]  # the shell script
    else:
        text = " ".join(command) if isinstance(command, list) else command
    found = []
    for part in re.split(r"&&|\|\||;|\(|\)|\n", text):
        words = shlex.split(part.strip()) if part.strip() else []
        if words and words[0] == "kyso":
            found.append(words[1:])
    return found


def test_kyso_commands_in_compose_exist(services: dict[str, dict[str, Any]]) -> None:
    calls = [call for service in services.values() for call in _kyso_invocations(service)]
    assert ["serve", "--host", "0.0.0.0", "--port", "8000"] in calls
    assert any(call[:2] == ["db", "upgrade"] for call in calls)  # migrations on start
    missing = [" ".join(call) for call in calls if not _cli_command_exists(call)]
    assert not missing, f"kyso commands the CLI does not have: {missing}"


def test_the_dockerfile_builds_from_what_exists() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim-bookworm\b", text, re.M)
    copies = re.findall(r"^COPY (?!--from)(.+)$", text, re.M)
    assert copies
    for line in copies:
        *sources, _target = line.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY source {source} missing"
    packages = set(re.findall(r"[a-z0-9.+-]+", " ".join(re.findall(r"apt-get install[^&]+", text))))
    assert {"poppler-utils", "qpdf", "softhsm2", "fonts-liberation2"} <= packages
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.findall(r"^CMD (.+)$", text, re.M)[-1] == '["kyso", "serve", "--host", "0.0.0.0"]'
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8")
    for line in copies:
        for source in line.split()[:-1]:
            assert f"!{source.rstrip('/')}" in ignored.replace("/\n", "\n"), source


def _table_variables(section: str) -> set[str]:
    text = DEPLOY.read_text(encoding="utf-8")
    start = text.index(section)
    rows = []
    for line in text[start:].splitlines()[1:]:
        if line.startswith("#"):
            break
        if line.startswith("| `"):
            rows.append(line.split("`")[1])
    return set(rows)


def test_the_deploy_docs_list_exactly_the_settings() -> None:
    assert _table_variables("## Settings") == SETTINGS
    assert _table_variables("### Beat schedule") == BEAT_SETTINGS
