"""The translation catalogue: complete in both languages, placeholders consistent."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest

from kyso.i18n import LOCALES, catalogue, current_locale, set_locale, t

KYSO = Path(__file__).resolve().parents[1] / "kyso"


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_message_has_every_locale_with_the_same_placeholders() -> None:
    for key, texts in catalogue().items():
        assert set(texts) == set(LOCALES), key
        assert all(texts[loc].strip() for loc in LOCALES), key
        assert _fields(texts["vi"]) == _fields(texts["en"]), key


def test_every_code_used_in_the_code_is_in_the_catalogue() -> None:
    """Literal message keys passed to t(...) or to an error class exist in the catalogue."""
    used: set[str] = set()
    pattern = re.compile(r"""(?:\bt\(|Error\()\s*f?["']([a-z0-9_-]+(?:\.[a-z0-9_-]+)+)["']""")
    for path in KYSO.rglob("*.py"):
        for match in pattern.finditer(path.read_text(encoding="utf-8")):
            if "{" not in match.group(1):
                used.add(match.group(1))
    codes = re.compile(r"""^\s+code\s*=\s*["']([a-z0-9_.-]+)["']""", re.M)
    for path in KYSO.rglob("*.py"):
        used.update(codes.findall(path.read_text(encoding="utf-8")))
    missing = sorted(k for k in used if k not in catalogue())
    assert not missing
    assert len(used) > 20  # the scan found the code's messages at all


def test_vietnamese_is_the_default_and_english_the_second(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KYSO_LOCALE", raising=False)
    set_locale(None)
    assert current_locale() == "vi"
    assert t("certs.keystore.not_found", label="x") == "Không tìm thấy khóa “x”."
    assert t("certs.keystore.not_found", locale="en", label="x") == "No key named “x”."
    monkeypatch.setenv("KYSO_LOCALE", "en")
    assert t("certs.keystore.not_found", label="x") == "No key named “x”."
    with pytest.raises(ValueError):
        set_locale("fr")


def test_an_unknown_key_shows_itself_instead_of_crashing() -> None:
    assert t("no.such.message") == "no.such.message"
