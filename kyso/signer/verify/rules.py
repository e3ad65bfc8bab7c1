"""kyso's difference-analysis policy: pyhanko's default plus two rules it lacks.

Stock pyhanko rates *any* annotation added after signing as ``OTHER`` (a forbidden change)
and has no rule for a tagged PDF's structure tree, so a reviewer's sticky note or an
accessibility update turns a valid document red.  Here:

* :class:`SafeAnnotationRule` accepts, at ``ANNOTATIONS`` level, new markup annotations
  that comment without covering the page (``SAFE_ANNOTATIONS``: text notes, highlights,
  underlines, strike-outs...) appended to a page's ``/Annots``, together with their own new
  appearance streams and pop-ups.  DocMDP then decides: pyhanko refuses ``ANNOTATIONS``
  under a certification signature with P=1 or P=2.  Anything else added as an annotation
  (stamps, free text, shapes, ink, links, widgets outside the form) stays forbidden: it
  can cover or alter what the page shows.
* :class:`StructTreeRule` accepts updates of the structure tree (dictionaries and arrays
  reachable from ``/StructTreeRoot``, never streams, pages or annotations) at
  ``FORM_FILLING`` level.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.reader import HistoricalResolver
from pyhanko.sign.diff_analysis import (
    DEFAULT_DIFF_POLICY,
    ModificationLevel,
    QualifiedWhitelistRule,
    ReferenceUpdate,
    StandardDiffPolicy,
)
from pyhanko.sign.diff_analysis.constants import ROOT_EXEMPT_STRICT_COMPARISON
from pyhanko.sign.diff_analysis.rules.file_structure_rules import CatalogModificationRule

from kyso.signer.verify.changes import MAX_WALK, SAFE_ANNOTATIONS, page_refs

_STRUCT_SKIP = frozenset({"/Pg", "/Obj", "/Stm", "/StmOwn", "/P", "/Parent"})


def _ref(value: Any) -> generic.Reference | None:
    return value.reference if isinstance(value, generic.IndirectObject) else None


def _existed(old: HistoricalResolver, ref: generic.Reference) -> bool:
    try:
        return old.reader.xrefs.get_historical_ref(ref, old.revision) is not None
    except Exception:
        return False


def _annots(page: generic.DictionaryObject) -> tuple[generic.Reference | None, list[Any]]:
    if "/Annots" not in page:
        return None, []
    raw = page.raw_get("/Annots")
    value = raw.get_object() if isinstance(raw, generic.IndirectObject) else raw
    return _ref(raw), list(value) if isinstance(value, generic.ArrayObject) else []


def _new_descendants(
    old: HistoricalResolver, new: HistoricalResolver, start: Any
) -> list[generic.Reference] | None:
    """New objects reachable from a new annotation (appearances, pop-up), or ``None`` if it
    reaches anything that already existed other than its page."""
    out: list[generic.Reference] = []
    stack = [start]
    seen: set[generic.Reference] = set()
    while stack and len(seen) < MAX_WALK:
        item = stack.pop()
        ref = _ref(item)
        if ref is not None:
            if ref in seen:
                continue
            seen.add(ref)
            if _existed(old, ref):
                return None
            out.append(ref)
            item = new.get_object(ref)
        if isinstance(item, generic.DictionaryObject):
            for key in item:
                if key in ("/P", "/Parent"):
                    continue
                stack.append(item.raw_get(key))
        elif isinstance(item, generic.ArrayObject):
            stack.extend(item)
    return out


class SafeAnnotationRule(QualifiedWhitelistRule):
    """New comment-style annotations on existing pages."""

    def apply_qualified(
        self, old: HistoricalResolver, new: HistoricalResolver
    ) -> Iterable[tuple[ModificationLevel, ReferenceUpdate]]:
        updated = new.explicit_refs_in_revision()
        old_pages = set(page_refs(old))
        for page_ref in page_refs(new):
            if page_ref not in old_pages:
                continue
            old_page, new_page = old.get_object(page_ref), new.get_object(page_ref)
            if not isinstance(old_page, generic.DictionaryObject) or not isinstance(
                new_page, generic.DictionaryObject
            ):
                continue
            old_array_ref, old_list = _annots(old_page)
            new_array_ref, new_list = _annots(new_page)
            page_changed = page_ref in updated
            array_changed = new_array_ref is not None and new_array_ref in updated
            if not page_changed and not array_changed:
                continue
            if page_changed:
                others = (set(old_page.keys()) | set(new_page.keys())) - {"/Annots"}
                if any(old_page.get(k) != new_page.get(k) for k in others):
                    continue
            old_refs = [_ref(a) for a in old_list]
            new_refs = [_ref(a) for a in new_list]
            if None in old_refs or None in new_refs or new_refs[: len(old_refs)] != old_refs:
                continue  # direct annotations, reordering or removal: not ours to approve
            approved: list[generic.Reference] = []
            ok = True
            for ref in new_refs[len(old_refs) :]:
                assert ref is not None
                annot = new.get_object(ref)
                subtype = (
                    annot.get("/Subtype") if isinstance(annot, generic.DictionaryObject) else None
                )
                if subtype not in SAFE_ANNOTATIONS or "/FT" in annot:
                    ok = False
                    break
                descendants = _new_descendants(
                    old, new, generic.IndirectObject(ref.idnum, ref.generation, new)
                )
                if descendants is None:
                    ok = False
                    break
                approved.extend(descendants)
            if not ok or not approved:
                continue
            if page_changed:
                approved.append(page_ref)
            if (
                array_changed
                and new_array_ref is not None
                and (new_array_ref == old_array_ref or not _existed(old, new_array_ref))
            ):
                approved.append(new_array_ref)
            for ref in approved:
                yield ModificationLevel.ANNOTATIONS, ReferenceUpdate(ref)


class StructTreeRule(QualifiedWhitelistRule):
    """Updates of the logical structure tree (tags), never of what pages draw."""

    def apply_qualified(
        self, old: HistoricalResolver, new: HistoricalResolver
    ) -> Iterable[tuple[ModificationLevel, ReferenceUpdate]]:
        if "/StructTreeRoot" not in new.root:
            return
        updated = new.explicit_refs_in_revision()
        stack = [new.root.raw_get("/StructTreeRoot")]
        seen: set[generic.Reference] = set()
        while stack and len(seen) < MAX_WALK:
            item = stack.pop()
            ref = _ref(item)
            if ref is not None:
                if ref in seen:
                    continue
                seen.add(ref)
                item = new.get_object(ref)
                if isinstance(item, generic.StreamObject):
                    continue
                if isinstance(item, generic.DictionaryObject) and item.get("/Type") in (
                    "/Page",
                    "/Pages",
                    "/Annot",
                    "/XObject",
                ):
                    continue
                if ref in updated:
                    yield ModificationLevel.FORM_FILLING, ReferenceUpdate(ref)
            if isinstance(item, generic.DictionaryObject):
                for key in item:
                    if key not in _STRUCT_SKIP:
                        stack.append(item.raw_get(key))
            elif isinstance(item, generic.ArrayObject):
                stack.extend(item)


def kyso_diff_policy() -> StandardDiffPolicy:
    rules = [
        rule
        for rule in DEFAULT_DIFF_POLICY.global_rules
        if not isinstance(rule, CatalogModificationRule)
    ]
    return StandardDiffPolicy(
        global_rules=[
            CatalogModificationRule(
                ignored_keys=ROOT_EXEMPT_STRICT_COMPARISON | {"/StructTreeRoot"}
            ),
            *rules,
            SafeAnnotationRule(),
            StructTreeRule(),
        ],
        form_rule=DEFAULT_DIFF_POLICY.form_rule,
    )


DIFF_POLICY = kyso_diff_policy()
