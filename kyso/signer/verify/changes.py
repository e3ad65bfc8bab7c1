"""What changed in each revision added after a signature, in plain words.

pyhanko's difference analysis (run by the engine, with kyso's extra rules in
:mod:`kyso.signer.verify.rules`) decides whether the changes as a whole are allowed;
this module says *what* they are, object by object, so a clerk reads "form field
'so_hieu' filled" or "object 12 overridden so page 1 shows different content" instead of
a flat "modified".  Each :class:`~kyso.signer.verify.model.Change` carries its own verdict
by the same rules; the engine keeps the stricter of the two.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.reader import HistoricalResolver, PdfFileReader

from kyso.signer.verify.model import Change

# Markup annotations that comment on the page without covering or replacing what it shows.
SAFE_ANNOTATIONS = frozenset(
    {"/Text", "/Highlight", "/Underline", "/StrikeOut", "/Squiggly", "/Popup", "/Caret"}
)
MAX_WALK = 20_000  # objects visited per reachability walk
_STRUCTURAL_TYPES = frozenset({"/XRef", "/ObjStm"})
_STRUCT_LINKS = frozenset({"/Pg", "/Obj", "/Stm", "/StmOwn", "/P", "/Parent"})

# DocMDP permission levels (PDF 32000-1, 12.8.2.2).
MDP_NO_CHANGES, MDP_FILL_FORMS, MDP_ANNOTATE = 1, 2, 3


def _ref(value: Any) -> generic.Reference | None:
    if isinstance(value, generic.IndirectObject):
        return value.reference
    return None


def _deref(value: Any) -> Any:
    if isinstance(value, generic.IndirectObject):
        return value.get_object()
    return value


def _name(value: Any) -> str | None:
    value = _deref(value)
    return str(value) if isinstance(value, generic.NameObject) else None


def _exists(reader: PdfFileReader, ref: generic.Reference, revision: int) -> bool:
    try:
        return reader.xrefs.get_historical_ref(ref, revision) is not None
    except Exception:
        return False


def _safe_get(resolver: HistoricalResolver, ref: generic.Reference) -> Any:
    try:
        return resolver.get_object(ref)
    except Exception:
        return None


def page_refs(resolver: HistoricalResolver) -> list[generic.Reference]:
    """The pages of a revision, in order (cycles and junk skipped); remembered per reader
    and revision (a revision never changes, and difference analysis asks for every pair)."""
    cache: dict[int, list[generic.Reference]] | None
    try:
        cache = resolver.reader.__dict__.setdefault("_kyso_page_refs", {})
        revision = resolver.revision
    except AttributeError:
        cache, revision = None, -1
    if cache is not None and revision in cache:
        return list(cache[revision])
    out = _walk_pages(resolver)
    if cache is not None:
        cache[revision] = out
    return list(out)


def _walk_pages(resolver: HistoricalResolver) -> list[generic.Reference]:
    out: list[generic.Reference] = []
    seen: set[generic.Reference] = set()
    try:
        top = resolver.root.raw_get("/Pages")
    except Exception:
        return out
    stack: list[Any] = [top]
    while stack and len(seen) < MAX_WALK:
        item = stack.pop()
        ref = _ref(item)
        if ref is None or ref in seen:
            continue
        seen.add(ref)
        node = _safe_get(resolver, ref)
        if not isinstance(node, generic.DictionaryObject):
            continue
        if _name(node.get("/Type")) == "/Pages" or "/Kids" in node:
            kids = _deref(node.get("/Kids"))
            if isinstance(kids, generic.ArrayObject):
                stack.extend(reversed(list(kids)))
        else:
            out.append(ref)
    return out


def reachable(
    resolver: HistoricalResolver, start: Any, skip_keys: frozenset[str] = frozenset({"/Parent"})
) -> set[generic.Reference]:
    """Indirect objects reachable from ``start`` (bounded walk)."""
    found: set[generic.Reference] = set()
    stack: list[Any] = [start]
    steps = 0
    while stack and steps < MAX_WALK:
        steps += 1
        item = stack.pop()
        ref = _ref(item)
        if ref is not None:
            if ref in found:
                continue
            found.add(ref)
            item = _safe_get(resolver, ref)
        if isinstance(item, generic.DictionaryObject):  # streams are dictionaries too
            for key in list(item.keys()):
                if key in skip_keys:
                    continue
                with contextlib.suppress(Exception):
                    stack.append(item.raw_get(key))
        elif isinstance(item, generic.ArrayObject):
            stack.extend(list(item))
    return found


@dataclass
class _FieldInfo:
    name: str
    is_sig: bool
    value_ref: generic.Reference | None
    page: int | None


def field_map(
    resolver: HistoricalResolver, pages: list[generic.Reference]
) -> dict[generic.Reference, _FieldInfo]:
    """Every form field and widget object of a revision, by reference."""
    page_of_annot: dict[generic.Reference, int] = {}
    for number, page_ref in enumerate(pages, start=1):
        page = _safe_get(resolver, page_ref)
        annots = _deref(page.get("/Annots")) if isinstance(page, generic.DictionaryObject) else None
        if isinstance(annots, generic.ArrayObject):
            for annot in annots:
                ref = _ref(annot)
                if ref is not None:
                    page_of_annot.setdefault(ref, number)
    out: dict[generic.Reference, _FieldInfo] = {}
    try:
        form = _deref(resolver.root.get("/AcroForm"))
        fields = _deref(form.get("/Fields")) if isinstance(form, generic.DictionaryObject) else None
    except Exception:
        fields = None
    if not isinstance(fields, generic.ArrayObject):
        return out
    stack: list[tuple[Any, str, str | None]] = [(f, "", None) for f in fields]
    while stack and len(out) < MAX_WALK:
        item, prefix, inherited_ft = stack.pop()
        ref = _ref(item)
        node = _deref(item)
        if ref is None or ref in out or not isinstance(node, generic.DictionaryObject):
            continue
        partial = node.get("/T")
        name = prefix
        if partial is not None:
            name = f"{prefix}.{partial}" if prefix else str(partial)
        ft = _name(node.get("/FT")) or inherited_ft
        out[ref] = _FieldInfo(
            name=name or "?",
            is_sig=ft == "/Sig",
            value_ref=_ref(node.raw_get("/V")) if "/V" in node else None,
            page=page_of_annot.get(ref),
        )
        kids = _deref(node.get("/Kids"))
        if isinstance(kids, generic.ArrayObject):
            for kid in kids:
                stack.append((kid, name, ft))
                kid_ref = _ref(kid)
                if kid_ref is not None and out[ref].page is None:
                    out[ref].page = page_of_annot.get(kid_ref)
    return out


@dataclass
class Permissions:
    """What the signature being reviewed allows after it."""

    docmdp: int | None = None  # None: no certification signature
    locked_fields: frozenset[str] | None = frozenset()  # None: every field locked

    @property
    def forms(self) -> bool:
        return self.docmdp is None or self.docmdp >= MDP_FILL_FORMS

    @property
    def annotations(self) -> bool:
        return self.docmdp is None or self.docmdp >= MDP_ANNOTATE

    def field_locked(self, name: str) -> bool:
        return self.locked_fields is None or name in self.locked_fields


@dataclass
class _Revision:
    """One revision's view, built lazily."""

    reader: PdfFileReader
    number: int  # pyhanko's 0-based index
    _resolver: HistoricalResolver | None = None
    _pages: list[generic.Reference] | None = None
    _fields: dict[generic.Reference, _FieldInfo] | None = None
    _page_reach: list[set[generic.Reference]] | None = None
    _cache: dict[str, set[generic.Reference]] = field(default_factory=dict)

    @property
    def resolver(self) -> HistoricalResolver:
        if self._resolver is None:
            self._resolver = self.reader.get_historical_resolver(self.number)
        return self._resolver

    @property
    def pages(self) -> list[generic.Reference]:
        if self._pages is None:
            self._pages = page_refs(self.resolver)
        return self._pages

    @property
    def fields(self) -> dict[generic.Reference, _FieldInfo]:
        if self._fields is None:
            self._fields = field_map(self.resolver, self.pages)
        return self._fields

    def page_number(self, ref: generic.Reference) -> int | None:
        try:
            return self.pages.index(ref) + 1
        except ValueError:
            return None

    def under(self, key: str) -> set[generic.Reference]:
        """Objects reachable from the catalog entry ``key`` (/DSS, /StructTreeRoot...)."""
        if key not in self._cache:
            try:
                start = self.resolver.root.raw_get(key) if key in self.resolver.root else None
            except Exception:
                start = None
            # never through links back to pages, annotations and content (/Pg, /Obj...):
            # those are what the page shows, not the tags
            skip = _STRUCT_LINKS if key == "/StructTreeRoot" else frozenset({"/Parent"})
            self._cache[key] = (
                reachable(self.resolver, start, skip_keys=skip) if start is not None else set()
            )
        return self._cache[key]

    def page_contents(self) -> list[set[generic.Reference]]:
        """For each page, its content stream objects (and the array holding them)."""
        out = []
        for ref in self.pages:
            page = _safe_get(self.resolver, ref)
            refs: set[generic.Reference] = set()
            if isinstance(page, generic.DictionaryObject) and "/Contents" in page:
                raw = page.raw_get("/Contents")
                if (found := _ref(raw)) is not None:
                    refs.add(found)
                for item in _items(raw):
                    if (found := _ref(item)) is not None:
                        refs.add(found)
            out.append(refs)
        return out

    def page_reach(self) -> list[set[generic.Reference]]:
        """For each page, what it draws with: contents, resources, annotation appearances."""
        if self._page_reach is None:
            out = []
            for ref in self.pages:
                page = _safe_get(self.resolver, ref)
                refs: set[generic.Reference] = set()
                if isinstance(page, generic.DictionaryObject):
                    for key in ("/Contents", "/Resources", "/Annots"):
                        if key in page:
                            refs |= reachable(
                                self.resolver,
                                page.raw_get(key),
                                skip_keys=frozenset({"/Parent", "/P", "/V", "/Popup"}),
                            )
                out.append(refs)
            self._page_reach = out
        return self._page_reach


def describe(reader: PdfFileReader, base_revision: int, permissions: Permissions) -> list[Change]:
    """Every change after ``base_revision`` (0-based, pyhanko's numbering)."""
    changes: list[Change] = []
    total = reader.xrefs.total_revisions
    previous = _Revision(reader, base_revision)
    for number in range(base_revision + 1, total):
        current = _Revision(reader, number)
        try:
            changes.extend(_dedup(_describe_revision(previous, current, permissions)))
        except Exception as exc:
            changes.append(
                Change("unreadable_revision", number + 1, False, target=type(exc).__name__)
            )
        previous = current
    return changes


def _dedup(changes: Iterable[Change]) -> list[Change]:
    seen: set[tuple[Any, ...]] = set()
    out = []
    for change in changes:
        key = (change.kind, change.page, change.target, change.permitted)
        if key not in seen:
            seen.add(key)
            out.append(change)
    return out


def _describe_revision(prev: _Revision, cur: _Revision, perms: Permissions) -> Iterator[Change]:
    rev = cur.number + 1
    reader = cur.reader
    explained: set[generic.Reference] = set()

    # Pages added or removed.
    prev_pages, cur_pages = prev.pages, cur.pages
    prev_set, cur_set = set(prev_pages), set(cur_pages)
    for ref in cur_pages:
        if ref not in prev_set:
            yield Change("page_added", rev, False, page=cur.page_number(ref))
    for index, ref in enumerate(prev_pages, start=1):
        if ref not in cur_set:
            yield Change("page_removed", rev, False, page=index)

    freed = set()
    with contextlib.suppress(Exception):
        freed = set(reader.xrefs.refs_freed_in_revision(cur.number))
    for ref in sorted(freed, key=lambda r: (r.idnum, r.generation)):
        if ref in prev_set:
            continue  # counted as a removed page
        yield Change("other", rev, False, target=f"object {ref.idnum} deleted")

    try:
        updated = sorted(reader.xrefs.explicit_refs_in_revision(cur.number), key=lambda r: r.idnum)
    except Exception:
        yield Change("unreadable_revision", rev, False)
        return

    annot_arrays: dict[generic.Reference, generic.Reference] = {}
    for page_ref in cur_pages:
        page_obj = _safe_get(cur.resolver, page_ref)
        if isinstance(page_obj, generic.DictionaryObject) and "/Annots" in page_obj:
            array_ref = _ref(page_obj.raw_get("/Annots"))
            if array_ref is not None:
                annot_arrays[array_ref] = page_ref
    dss, struct = cur.under("/DSS"), cur.under("/StructTreeRoot")
    ltv = False
    for ref in updated:
        if ref in explained:
            continue
        obj = _safe_get(cur.resolver, ref)
        existed = _exists(reader, ref, prev.number)
        old = _safe_get(prev.resolver, ref) if existed else None
        if existed and old is not None and obj is not None and _same(old, obj):
            continue  # rewritten unchanged
        kind = _name(obj.get("/Type")) if isinstance(obj, generic.DictionaryObject) else None
        if kind in _STRUCTURAL_TYPES:
            continue
        if ref == cur.resolver.root_ref:
            yield from _catalog_changes(prev, cur, rev, old, obj)
            continue
        if ref in annot_arrays and existed:
            yield from _annotation_changes(
                prev, cur, rev, cur.page_number(annot_arrays[ref]), _items(old), _items(obj), perms
            )
            continue
        if ref in cur_set:
            if existed:
                yield from _page_changes(prev, cur, rev, ref, old, obj, perms)
            continue
        if kind == "/Pages":
            continue  # the page tree: pages added/removed are reported above
        if ref in cur.fields or ref in prev.fields:
            yield from _field_changes(prev, cur, rev, ref, existed, perms)
            continue
        if isinstance(obj, generic.DictionaryObject) and (
            kind in ("/Sig", "/DocTimeStamp") or ("/ByteRange" in obj and "/Contents" in obj)
        ):
            if existed:
                keys = _changed_keys(old, obj) if isinstance(old, generic.DictionaryObject) else []
                yield Change(
                    "signature_dict_changed", rev, False, target=", ".join(keys) or f"{ref.idnum}"
                )
            continue  # a new one is reported with its field
        if ref in dss:
            ltv = True
            continue
        if ref in struct:
            yield Change("struct_tree_changed", rev, True)
            continue
        if _is_info(cur, ref) or kind == "/Metadata":
            yield Change("metadata_changed", rev, True, target="/Info" if kind is None else kind)
            continue
        if kind == "/AcroForm" or _is_acroform(cur, ref):
            continue  # the field list: fields are reported one by one
        if not existed:
            continue  # a new object: reported through whatever points at it
        # An object that existed before, overridden: whoever draws with it now shows
        # something else (shadow "replace" attacks, appearance swaps).
        contents = [n for n, refs in enumerate(prev.page_contents(), start=1) if ref in refs]
        if contents:
            for page in contents:
                yield Change(
                    "page_content_changed", rev, False, page=page, target=f"{ref.idnum} 0 R"
                )
            continue
        pages = [n for n, reach in enumerate(prev.page_reach(), start=1) if ref in reach]
        if pages:
            for page in pages:
                yield Change("object_overridden", rev, False, page=page, target=f"{ref.idnum} 0 R")
        else:
            yield Change("other", rev, False, target=f"object {ref.idnum} overridden")
    if ltv:
        yield Change("ltv_data_added", rev, True)


def _same(old: Any, new: Any) -> bool:
    try:
        if isinstance(old, generic.StreamObject) and isinstance(new, generic.StreamObject):
            return bool(old.encoded_data == new.encoded_data and dict(old) == dict(new))
        return bool(old == new)
    except Exception:
        return False


def _changed_keys(old: generic.DictionaryObject, new: generic.DictionaryObject) -> list[str]:
    keys = set(old.keys()) | set(new.keys())
    out = []
    for key in sorted(keys):
        try:
            if old.raw_get(key) != new.raw_get(key):
                out.append(str(key))
        except KeyError:
            out.append(str(key))
    return out


def _is_info(rev: _Revision, ref: generic.Reference) -> bool:
    try:
        return _ref(rev.resolver.trailer_view.raw_get("/Info")) == ref
    except KeyError:
        return False


def _is_acroform(rev: _Revision, ref: generic.Reference) -> bool:
    try:
        return _ref(rev.resolver.root.raw_get("/AcroForm")) == ref
    except KeyError:
        return False


_CATALOG_HARMLESS = {
    "/AcroForm": None,
    "/DSS": "ltv_data_added",
    "/StructTreeRoot": "struct_tree_changed",
    "/MarkInfo": "struct_tree_changed",
    "/Metadata": "metadata_changed",
}


def _catalog_changes(
    prev: _Revision, cur: _Revision, rev: int, old: Any, new: Any
) -> Iterator[Change]:
    if not isinstance(old, generic.DictionaryObject) or not isinstance(
        new, generic.DictionaryObject
    ):
        yield Change("catalog_changed", rev, False, target="/Root")
        return
    for key in _changed_keys(old, new):
        if key in _CATALOG_HARMLESS:
            kind = _CATALOG_HARMLESS[key]
            if kind is not None:
                yield Change(kind, rev, True, target=key if kind == "metadata_changed" else None)
        elif key == "/Pages":
            pass  # the page lists are compared directly
        else:
            yield Change("catalog_changed", rev, False, target=key)


def _page_changes(
    prev: _Revision,
    cur: _Revision,
    rev: int,
    ref: generic.Reference,
    old: Any,
    new: Any,
    perms: Permissions,
) -> Iterator[Change]:
    page = cur.page_number(ref)
    if not isinstance(old, generic.DictionaryObject) or not isinstance(
        new, generic.DictionaryObject
    ):
        yield Change("page_content_changed", rev, False, page=page)
        return
    for key in _changed_keys(old, new):
        if key == "/Contents":
            yield Change("page_content_changed", rev, False, page=page)
        elif key == "/Resources":
            yield Change("page_resources_changed", rev, False, page=page)
        elif key == "/Annots":
            yield from _annotation_changes(
                prev, cur, rev, page, _annot_refs(old), _annot_refs(new), perms
            )
        elif key in ("/StructParents", "/Tabs"):
            yield Change("struct_tree_changed", rev, True)
        else:
            yield Change("page_content_changed", rev, False, page=page, target=key)


def _items(value: Any) -> list[Any]:
    value = _deref(value)
    return list(value) if isinstance(value, generic.ArrayObject) else []


def _annot_refs(page: generic.DictionaryObject) -> list[Any]:
    try:
        return _items(page.raw_get("/Annots")) if "/Annots" in page else []
    except Exception:
        return []


def _annotation_changes(
    prev: _Revision,
    cur: _Revision,
    rev: int,
    page: int | None,
    old: list[Any],
    new: list[Any],
    perms: Permissions,
) -> Iterator[Change]:
    old_refs = {_ref(a) for a in old} - {None}
    for item in new:
        ref = _ref(item)
        if ref is not None and ref in old_refs:
            continue
        annot = _deref(item)
        subtype = (
            _name(annot.get("/Subtype")) if isinstance(annot, generic.DictionaryObject) else None
        )
        if ref is not None and (ref in cur.fields):
            info = cur.fields[ref]
            if info.is_sig:
                continue  # a new signature field: reported by _field_changes
            continue  # a new form field's widget: reported by _field_changes
        permitted = perms.annotations and subtype in SAFE_ANNOTATIONS
        yield Change(
            "annotation_added", rev, permitted, page=page, target=(subtype or "?").lstrip("/")
        )
    new_refs = {_ref(a) for a in new} - {None}
    for _removed in old_refs - new_refs:
        yield Change("annotation_removed", rev, False, page=page)


def _field_changes(
    prev: _Revision,
    cur: _Revision,
    rev: int,
    ref: generic.Reference,
    existed: bool,
    perms: Permissions,
) -> Iterator[Change]:
    info = cur.fields.get(ref) or prev.fields.get(ref)
    assert info is not None
    before = prev.fields.get(ref)
    if info.is_sig:
        if info.value_ref is not None and (before is None or before.value_ref != info.value_ref):
            value = _safe_get(cur.resolver, info.value_ref)
            kind = (
                _name(value.get("/Type")) if isinstance(value, generic.DictionaryObject) else None
            )
            if before is not None and before.value_ref is not None:
                yield Change("signature_dict_changed", rev, False, page=info.page, target=info.name)
            elif kind == "/DocTimeStamp":
                yield Change("doc_timestamp_added", rev, True, target=info.name)
            else:
                yield Change("signature_added", rev, True, page=info.page, target=info.name)
        elif before is None:
            yield Change("field_added", rev, True, page=info.page, target=info.name)
        elif before.value_ref is not None and info.value_ref is None:
            yield Change("signature_dict_changed", rev, False, page=info.page, target=info.name)
        elif _widget_redrawn(prev, cur, ref):
            # same signature, new look: a signed field's appearance swapped or moved
            yield Change("annotation_modified", rev, False, page=info.page, target=info.name)
        return
    if before is None and not existed:
        yield Change("field_added", rev, False, page=info.page, target=info.name)
        return
    old = _safe_get(prev.resolver, ref)
    new = _safe_get(cur.resolver, ref)
    if _field_value(old) == _field_value(new):
        if _widget_redrawn(prev, cur, ref):
            # the value stays, what the page shows changes: an appearance swap
            yield Change("annotation_modified", rev, False, page=info.page, target=info.name)
        return
    if _rect(old) != _rect(new):
        # "filled" and moved elsewhere on the page (over signed content)
        yield Change("annotation_modified", rev, False, page=info.page, target=info.name)
    read_only = _flags(old) & 1
    permitted = perms.forms and not perms.field_locked(info.name) and not read_only
    yield Change("form_filled", rev, permitted, page=info.page, target=info.name)


def _field_value(obj: Any) -> Any:
    """A field's /V (inherited from its parent for a bare widget), compared by value."""
    seen = 0
    while isinstance(obj, generic.DictionaryObject) and seen < 32:
        if "/V" in obj:
            try:
                return _deref(obj.raw_get("/V"))
            except Exception:
                return None
        obj = _deref(obj.get("/Parent"))
        seen += 1
    return None


def _rect(obj: Any) -> tuple[float, ...] | None:
    try:
        return tuple(round(float(v), 2) for v in obj["/Rect"])
    except Exception:
        return None


def _flags(obj: Any) -> int:
    try:
        return int(obj.get("/Ff", 0))
    except Exception:
        return 0


def _widget_redrawn(prev: _Revision, cur: _Revision, ref: generic.Reference) -> bool:
    """Did the widget's appearance or position change?"""
    old = _safe_get(prev.resolver, ref)
    new = _safe_get(cur.resolver, ref)
    if not isinstance(old, generic.DictionaryObject) or not isinstance(
        new, generic.DictionaryObject
    ):
        return old != new
    for key in ("/AP", "/Rect", "/MK", "/AS", "/F"):
        try:
            before = old.raw_get(key) if key in old else None
            after = new.raw_get(key) if key in new else None
        except Exception:
            return True
        if before != after:
            return True
    return False
