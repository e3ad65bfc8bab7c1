"""Who is calling: the authenticated user (or API token) a request or a job acts for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ROLES = ("official", "clerk", "verifier", "archivist", "admin")


@dataclass(frozen=True)
class Principal:
    """A user of one agency, authenticated by a web session or an API token.

    ``roles`` are the roles in force for this request: a token may carry fewer roles than its
    user holds."""

    user_id: int
    username: str
    agency: str
    roles: frozenset[str]
    via: Literal["session", "token", "system"] = "session"
    token_id: int | None = None
    full_name: str = ""

    @property
    def actor(self) -> str:
        """How the audit log names this principal."""
        if self.via == "token" and self.token_id is not None:
            return f"token:{self.token_id}:{self.username}@{self.agency}"
        return f"user:{self.username}@{self.agency}"

    def has(self, *roles: str) -> bool:
        """True when any of ``roles`` is held."""
        return any(r in self.roles for r in roles)
