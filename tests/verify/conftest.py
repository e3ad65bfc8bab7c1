"""The corpus of hostile and tricky signed PDFs, built once per test session."""

from __future__ import annotations

import pytest

from kyso.api.services import Services
from tests.conftest import LiveServer
from tests.verify.corpus import Case, build_corpus


@pytest.fixture(scope="session")
def corpus_services(live_server: LiveServer) -> Services:
    """The PKI the corpus is signed with: the live server's, so that its OCSP responder and
    CRLs answer at the URLs the certificates name (the verifier and pdfsig go online, as a
    receiving agency would)."""
    return live_server.services


@pytest.fixture(scope="session")
def corpus(corpus_services: Services, tmp_path_factory: pytest.TempPathFactory) -> list[Case]:
    """Every case of tests/verify/CORPUS.md, built into a temporary folder with the live
    server's built-in PKI (bases in ``bases/`` beside the cases)."""
    return build_corpus(tmp_path_factory.mktemp("verify-corpus"), corpus_services)


@pytest.fixture(scope="session")
def corpus_by_name(corpus: list[Case]) -> dict[str, Case]:
    return {case.name: case for case in corpus}
