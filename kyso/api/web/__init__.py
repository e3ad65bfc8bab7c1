"""The server-rendered web UI: Vietnamese first, English a click away.

Pages call the same library functions as the API and the CLI (``kyso.api.workflow``,
``kyso.api.accounts``, ``kyso.signer.verify``, the archive catalogue), never the HTTP API of
this very server.  See docs/web-ui.md.
"""

from fastapi import APIRouter

from kyso.api.web import admin, documents, exchange, login, setup, ui, verify_page

router = APIRouter(include_in_schema=False)
router.include_router(ui.router)
# first: before any agency exists, '/' and '/login' lead to the first-run setup
router.include_router(setup.router)
router.include_router(verify_page.router)
router.include_router(login.router)
router.include_router(documents.router)
router.include_router(admin.router)
router.include_router(exchange.router)

__all__ = ["router"]
