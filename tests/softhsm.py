"""A SoftHSM2 token for tests, in a directory the test owns.

``init_token(tmp_dir)`` writes ``softhsm2.conf`` (token directory inside ``tmp_dir``), points
``SOFTHSM2_CONF`` at it for this process, runs ``softhsm2-util --init-token --free`` and
returns where the module is, the token label and the PINs.  It never skips: a missing
``softhsm2-util`` or module is an error.

Traps (SoftHSM2 2.6.1 with python-pkcs11 0.10):

* SoftHSM2 reads ``SOFTHSM2_CONF`` and its token list only in ``C_Initialize``, and
  python-pkcs11 initialises each module once per process (``pkcs11.lib`` caches it).  A token
  created afterwards is invisible until the library is re-initialised, so ``init_token``
  calls ``reinitialize()`` when the module is already loaded, which invalidates every session
  opened before.  Use one token directory per test module or session (a module- or
  session-scoped fixture), not one per test.
* Login state is per process: a second ``token.open(user_pin=...)`` fails with
  ``UserAlreadyLoggedIn``, and closing a logged-in session logs all sessions out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pkcs11

MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)


@dataclass(frozen=True)
class SoftHSMToken:
    """An initialised SoftHSM2 token."""

    module: str
    label: str
    pin: str
    so_pin: str
    conf: Path


def find_module() -> str:
    """Path of the SoftHSM2 PKCS#11 module (``SOFTHSM2_MODULE`` overrides the search)."""
    candidates = [os.environ.get("SOFTHSM2_MODULE", ""), *MODULE_CANDIDATES]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    raise RuntimeError(f"SoftHSM2 module not found (looked at {', '.join(MODULE_CANDIDATES)})")


def softhsm_util() -> str:
    """Path of ``softhsm2-util``; an error (not a skip) when it is missing."""
    path = shutil.which("softhsm2-util")
    if path is None:
        raise RuntimeError("softhsm2-util is not installed (apt-get install softhsm2)")
    return path


def write_conf(directory: Path) -> Path:
    """Write ``directory/softhsm2.conf`` with tokens in ``directory/tokens``; return its path."""
    tokens = directory / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n",
        encoding="utf-8",
    )
    return conf


def init_token(
    directory: Path,
    label: str = "kyso-test",
    pin: str = "1234",
    so_pin: str = "5678",
) -> SoftHSMToken:
    """Initialise a token labelled ``label`` in ``directory`` and make this process see it.

    Calling it again with the same directory adds another token next to the first.
    """
    util = softhsm_util()
    module = find_module()
    directory = Path(directory)
    conf = directory / "softhsm2.conf"
    if not conf.is_file():
        conf = write_conf(directory)
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    subprocess.run(
        [util, "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", so_pin],
        check=True,
        capture_output=True,
        env=env,
    )
    os.environ["SOFTHSM2_CONF"] = str(conf)
    # Loads and initialises the module, or re-initialises an already loaded one so that it
    # reads the new configuration and token list.
    pkcs11.lib(module).reinitialize()
    return SoftHSMToken(module=module, label=label, pin=pin, so_pin=so_pin, conf=conf)
