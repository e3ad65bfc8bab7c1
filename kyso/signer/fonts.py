"""The serif font of signature appearances: Liberation Serif, rescaled for pyHanko.

Decree 30/2020 Appendix I asks for Times New Roman in the text of an agency signature.  kyso
ships Liberation Serif 2.1.5 (SIL OFL 1.1, metric-compatible with Times New Roman, with every
Vietnamese letter; see ``kyso/data/fonts/README.md``).  The shipped files are never used as
they are: pyHanko 0.38 writes glyph widths in raw font units, while PDF expects thousandths of
an em, so a font drawn on a 2048-unit em comes out letter-spaced by a factor of 2.048 and
overflows its box.  :func:`serif_font_path` therefore returns a copy rescaled to 1000 units per
em with fontTools, made once and cached outside the installed package, in a per-user cache
folder keyed by the SHA-256 of the shipped file.

The rescaled copy is a *Modified Version* in the OFL's sense, and "Liberation" is a Reserved
Font Name, so the copy is renamed ``KysoSerif`` (the name embedded in signed PDFs).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
import threading
from functools import lru_cache
from importlib import resources
from pathlib import Path

__all__ = [
    "FONT_FAMILY",
    "TARGET_UNITS_PER_EM",
    "VIETNAMESE_LETTERS",
    "font_cache_dir",
    "missing_glyphs",
    "serif_font_path",
    "shipped_font_path",
    "text_width",
]

TARGET_UNITS_PER_EM = 1000
"""The em size pyHanko needs to write correct widths (PDF glyph space is 1/1000 em)."""

FONT_FAMILY = "KysoSerif"
"""Family name of the rescaled copy (the OFL forbids the Reserved Font Name on modified fonts)."""

_SHIPPED = {False: "LiberationSerif-Regular.ttf", True: "LiberationSerif-Bold.ttf"}
# Bump when the transformation changes, so old cache entries are not reused.
_RECIPE = "upem1000-rename-v2"

_UPPER = "ÀÁẢÃẠĂẰẮẲẴẶÂẦẤẨẪẬĐÈÉẺẼẸÊỀẾỂỄỆÌÍỈĨỊÒÓỎÕỌÔỒỐỔỖỘƠỜỚỞỠỢÙÚỦŨỤƯỪỨỬỮỰỲÝỶỸỴ"
VIETNAMESE_LETTERS = _UPPER + _UPPER.lower()
"""Every accented Vietnamese letter, upper and lower case (the font must draw all of them)."""

_lock = threading.Lock()


def shipped_font_path(bold: bool = False) -> Path:
    """The Liberation Serif file shipped in ``kyso/data/fonts`` (2048 units/em: do not embed)."""
    ref = resources.files("kyso") / "data" / "fonts" / _SHIPPED[bold]
    return Path(str(ref))


def font_cache_dir() -> Path:
    """The folder of generated fonts: ``$KYSO_FONT_CACHE``, else the user cache, else temp.

    The folder must belong to the current user and not be writable by others (a shared temp
    folder could otherwise hand us a planted font); an unsuitable candidate is skipped.
    """
    candidates: list[Path] = []
    env = os.environ.get("KYSO_FONT_CACHE")
    if env:
        candidates.append(Path(env))
    xdg = os.environ.get("XDG_CACHE_HOME")
    home_cache = Path(xdg) if xdg else Path.home() / ".cache"
    candidates.append(home_cache / "kyso" / "fonts")
    uid = os.getuid() if hasattr(os, "getuid") else 0
    candidates.append(Path(tempfile.gettempdir()) / f"kyso-fonts-{uid}")
    for folder in candidates:
        if _usable_dir(folder):
            return folder
    # Last resort: a fresh private folder for this process.
    return Path(tempfile.mkdtemp(prefix="kyso-fonts-"))


def _usable_dir(folder: Path) -> bool:
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = folder.stat()
    except OSError:
        return False
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        return False
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return False
    return os.access(folder, os.W_OK)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@lru_cache(maxsize=4)
def serif_font_path(bold: bool = False) -> Path:
    """Path of the serif font to embed: Liberation Serif rescaled to 1000 units/em.

    Generated on first use from the shipped file (about half a second) and cached on disk
    under :func:`font_cache_dir`, keyed by the shipped file's SHA-256; later calls (and later
    processes) reuse it.  The shipped package is never written to.
    """
    source = shipped_font_path(bold)
    digest = _sha256(source)
    target = font_cache_dir() / f"{FONT_FAMILY}-{_style(bold)}-{digest[:16]}-{_RECIPE}.ttf"
    with _lock:
        if not _is_rescaled(target):
            _rescale(source, target, bold)
    return target


def _style(bold: bool) -> str:
    return "Bold" if bold else "Regular"


def _is_rescaled(path: Path) -> bool:
    if not path.is_file():
        return False
    from fontTools.ttLib import TTFont, TTLibError

    try:
        with TTFont(str(path), lazy=True) as font:
            return bool(font["head"].unitsPerEm == TARGET_UNITS_PER_EM)
    except (TTLibError, OSError, KeyError, AssertionError):
        return False


def _rescale(source: Path, target: Path, bold: bool) -> None:
    from fontTools.ttLib import TTFont
    from fontTools.ttLib.scaleUpem import scale_upem

    font = TTFont(str(source))
    scale_upem(font, TARGET_UNITS_PER_EM)
    if "FFTM" in font:  # FontForge's timestamps: the subsetter warns about it on every PDF
        del font["FFTM"]
    style = _style(bold)
    ps_name = f"{FONT_FAMILY}-{style}"
    names = font["name"]
    for record in list(names.names):
        if record.nameID in (1, 16):
            names.setName(
                FONT_FAMILY, record.nameID, record.platformID, record.platEncID, record.langID
            )
        elif record.nameID == 3:
            names.setName(
                f"kyso:{ps_name}:{_RECIPE}", 3, record.platformID, record.platEncID, record.langID
            )
        elif record.nameID == 4:
            names.setName(
                f"{FONT_FAMILY} {style}", 4, record.platformID, record.platEncID, record.langID
            )
        elif record.nameID == 6:
            names.setName(ps_name, 6, record.platformID, record.platEncID, record.langID)
    font.recalcTimestamp = False
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".ttf", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            font.save(out)
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    finally:
        font.close()


@lru_cache(maxsize=4)
def _metrics(path: Path) -> tuple[dict[int, str], dict[str, int], int]:
    from fontTools.ttLib import TTFont

    with TTFont(str(path)) as font:
        cmap = dict(font.getBestCmap())
        advances = {name: adv for name, (adv, _lsb) in font["hmtx"].metrics.items()}
        upem = int(font["head"].unitsPerEm)
    return cmap, advances, upem


def missing_glyphs(text: str, path: Path | None = None) -> list[str]:
    """The characters of ``text`` the font (default: the rescaled serif) has no glyph for.

    Whitespace and control characters are not reported.
    """
    cmap, _advances, _upem = _metrics(path or serif_font_path())
    seen: list[str] = []
    for char in text:
        if char.isspace() or not char.isprintable():
            continue
        if ord(char) not in cmap and char not in seen:
            seen.append(char)
    return seen


def text_width(text: str, size: float, *, bold: bool = False, path: Path | None = None) -> float:
    """Advance width of one line of ``text`` at ``size`` points, from the font's metrics.

    Sums the horizontal advances (no kerning): what a correct renderer draws to within a few
    per cent.  Characters without a glyph count as the ``.notdef`` glyph.
    """
    cmap, advances, upem = _metrics(path or serif_font_path(bold))
    notdef = advances.get(".notdef", upem // 2)
    total = 0
    for char in text:
        name = cmap.get(ord(char))
        total += advances.get(name, notdef) if name is not None else notdef
    return total * size / upem
