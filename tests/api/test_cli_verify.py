"""``kyso verify`` as a user runs it: its own process, exit codes, text, JSON, batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import kyso_cli, run
from tests.verify.test_engine import append_update, make_pdf, replace_content


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A data directory with a PKI and a person key, and files signed with it."""
    root = tmp_path_factory.mktemp("cli-verify")
    data = root / "data"
    source = root / "cong-van.pdf"
    source.write_bytes(make_pdf())
    assert kyso_cli(data, "pki", "init").returncode == 0
    issued = kyso_cli(
        data,
        "pki",
        "issue",
        "person",
        "Nguyễn Văn An",
        "--id",
        "CCCD:001090000001",
        "--label",
        "an",
    )
    assert issued.returncode == 0, issued.stderr
    out = {"data": data, "source": source}
    for level in ("B-B", "B-LTA"):
        target = root / f"{level}.pdf"
        signed = kyso_cli(data, "sign", source, target, "--key", "an", "--level", level)
        assert signed.returncode == 0, signed.stderr
        out[level] = target
    forged = root / "forged.pdf"
    forged.write_bytes(append_update(out["B-LTA"].read_bytes(), replace_content))
    out["forged"] = forged
    not_pdf = root / "notes.pdf"
    not_pdf.write_text("không phải PDF")
    out["not_pdf"] = not_pdf
    return out


def test_valid_file_exits_0_with_the_verdict_in_vietnamese(files: dict[str, Path]) -> None:
    proc = kyso_cli(files["data"], "verify", files["B-LTA"], "--offline", env={"KYSO_LOCALE": "vi"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Hợp lệ" in proc.stdout
    assert "Nguyễn Văn An (CCCD:001090000001)" in proc.stdout
    assert "B-LTA" in proc.stdout
    assert "Traceback" not in proc.stderr and "WARNING" not in proc.stderr


def test_indeterminate_exits_2_and_failed_exits_1(files: dict[str, Path]) -> None:
    undecided = kyso_cli(files["data"], "verify", files["B-B"], "--offline")
    assert undecided.returncode == 2, undecided.stdout + undecided.stderr
    assert "TRY_LATER" in undecided.stdout
    forged = kyso_cli(files["data"], "verify", files["forged"], "--offline", "--lang", "en")
    assert forged.returncode == 1, forged.stdout + forged.stderr
    assert "Page 1 content replaced." in forged.stdout


def test_json_report_on_stdout(files: dict[str, Path]) -> None:
    proc = kyso_cli(files["data"], "verify", files["forged"], "--offline", "--json")
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["indication"] == "TOTAL_FAILED"
    assert report["modified_after_signing"] is True
    assert report["policy"]["revocation"] == "offline"
    kinds = [c["kind"] for c in report["changes"]]
    assert "page_content_changed" in kinds
    assert [s["kind"] for s in report["signatures"]] == ["signature", "document_timestamp"]


def test_report_written_to_a_file(files: dict[str, Path], tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    proc = kyso_cli(
        files["data"], "verify", files["B-LTA"], "--offline", "--format", "json", "--out", target
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(target.read_text())["indication"] == "TOTAL_PASSED"
    assert proc.stdout == ""


def test_not_a_pdf_or_missing_exits_3(files: dict[str, Path], tmp_path: Path) -> None:
    for path in (files["not_pdf"], tmp_path / "missing.pdf"):
        proc = kyso_cli(files["data"], "verify", path)
        assert proc.returncode == 3, proc.stdout + proc.stderr
        assert proc.stderr.startswith("Error:") and "Traceback" not in proc.stderr


def test_bad_options_are_refused_clearly(files: dict[str, Path]) -> None:
    bad_time = kyso_cli(files["data"], "verify", files["B-B"], "--at", "hôm qua")
    assert bad_time.returncode == 3 and "ISO 8601" in bad_time.stderr
    bad_preset = kyso_cli(files["data"], "verify", files["B-B"], "--trust-preset", "nowhere")
    assert bad_preset.returncode == 3 and "nowhere" in bad_preset.stderr
    no_out = kyso_cli(files["data"], "verify", files["B-B"], "--format", "pdf")
    assert no_out.returncode == 2 and "--out" in no_out.stderr


def test_trust_only_what_is_given(files: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "root.pem"
    assert kyso_cli(files["data"], "pki", "export-root", root).returncode == 0
    trusted = kyso_cli(files["data"], "verify", files["B-LTA"], "--offline", "--trust", root)
    assert trusted.returncode == 0, trusted.stdout
    gov_only = kyso_cli(
        files["data"], "verify", files["B-LTA"], "--offline", "--trust-preset", "vn-gov"
    )
    assert gov_only.returncode == 2 and "NO_CERTIFICATE_CHAIN_FOUND" in gov_only.stdout


def test_a_directory_is_a_batch_with_a_summary_and_the_worst_exit_code(
    files: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "inbox"
    folder.mkdir()
    for name in ("B-LTA", "B-B", "forged", "not_pdf"):
        (folder / files[name].name).write_bytes(files[name].read_bytes())
    proc = kyso_cli(files["data"], "verify", folder, "--offline")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "4 files: 1 valid, 1 not valid, 1 indeterminate, 1 unreadable." in proc.stdout
    as_json = kyso_cli(files["data"], "verify", folder, "--offline", "--json")
    reports = json.loads(as_json.stdout)
    assert sorted(r["indication"] for r in reports) == [
        "INDETERMINATE",
        "TOTAL_FAILED",
        "TOTAL_PASSED",
    ]
    out_dir = tmp_path / "reports"
    written = kyso_cli(
        files["data"], "verify", folder, "--offline", "--format", "json", "--out", out_dir
    )
    assert written.returncode == 3
    assert sorted(p.name for p in out_dir.iterdir()) == ["B-B.json", "B-LTA.json", "forged.json"]


def test_html_xml_and_a_sealed_pdf_report(files: dict[str, Path], tmp_path: Path) -> None:
    html = kyso_cli(
        files["data"], "verify", files["forged"], "--offline", "--format", "html",
        env={"KYSO_LOCALE": "vi"},
    )  # fmt: skip
    assert html.returncode == 1
    assert html.stdout.startswith("<!DOCTYPE html>") and "Không hợp lệ" in html.stdout
    assert "data:image/png;base64," in html.stdout  # pages and the visual diff, inline
    xml = kyso_cli(files["data"], "verify", files["B-LTA"], "--offline", "--format", "xml")
    assert xml.returncode == 0
    assert 'xmlns:vr="http://uri.etsi.org/19102/v1.2.1#"' in xml.stdout
    assert "urn:etsi:019102:mainindication:total-passed" in xml.stdout
    sealed = tmp_path / "bien-ban-kiem-tra.pdf"
    proc = kyso_cli(
        files["data"], "verify", files["B-LTA"], "--offline", "--seal", "an", "--out", sealed,
        env={"KYSO_LOCALE": "vi"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr  # the verdict on the file, not on the report
    text = run("pdftotext", sealed, "-").stdout
    assert "Hợp lệ" in text and files["B-LTA"].name in text
    check = kyso_cli(files["data"], "verify", sealed, "--offline", "--json")
    report = json.loads(check.stdout)
    signature = report["signatures"][0]
    assert signature["integrity"]["digest_ok"] and signature["integrity"]["signature_ok"]
    assert signature["level"] == "B-T" and signature["signer"]["common_name"] == "Nguyễn Văn An"
    assert files["B-LTA"].name not in {p.name for p in tmp_path.iterdir()}
