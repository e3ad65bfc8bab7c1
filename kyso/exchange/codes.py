"""Code tables of the exchange: what the numbers in an edXML message mean.

Known from QCVN 102:2016 and the hub's practice (see docs/exchange.md): the business types of
a TraceHeaderList (``BussinessDocType`` 0 new, 1 recall, 2 update, 3 replace) and the status
codes (01 arrived … 16 refuse an update or withdrawal).

Not known to us, hence configurable (:class:`CodeTables`, defaults in :data:`DEFAULT_CODE_TABLES`):

* ``Priority`` (độ khẩn): 0 Thường, 1 Khẩn, 2 Thượng khẩn, 3 Hỏa tốc (assumed: the levels in
  the order Decree 30 lists them).
* ``SteeringType``: 0 not a steering document, 1 steering (chỉ đạo), 2 report on carrying out
  a steering document (assumed).
* ``DocumentType.Type``: the 29 administrative document types of Decree 30/2020 Art. 7 in the
  order the decree lists them, 1 Nghị quyết … 18 Công văn … 29 Thư công (assumed; the one
  integration sample we have sends Type 18 with TypeName "Công văn", which agrees).  A type
  name outside the table is sent as :attr:`CodeTables.other_document_type` (0).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from kyso.archive.metadata import URGENCY_LEVELS, fold
from kyso.exchange.errors import UnsupportedMetadata

__all__ = [
    "DECREE30_DOCUMENT_TYPES",
    "DEFAULT_CODE_TABLES",
    "BusinessDocType",
    "CodeTables",
    "StatusCode",
]


class BusinessDocType(enum.IntEnum):
    """``Bussiness/BussinessDocType`` of a TraceHeaderList (QCVN 102 spelling)."""

    NEW = 0
    RECALL = 1
    UPDATE = 2
    REPLACE = 3


class StatusCode(enum.StrEnum):
    """``StatusCode`` of a status message (two digits on the wire)."""

    ARRIVED = "01"
    REJECTED = "02"
    ACCEPTED = "03"
    ASSIGNED = "04"
    IN_PROGRESS = "05"
    COMPLETED = "06"
    WITHDRAWN = "13"
    AGREE = "15"
    REFUSE = "16"

    @classmethod
    def parse(cls, text: str) -> StatusCode:
        """The status for ``text`` (``"1"`` and ``"01"`` both mean arrived); ValueError if none."""
        value = text.strip()
        if value.isdigit() and len(value) <= 2:
            return cls(value.zfill(2))
        raise ValueError(text)


#: Decree 30/2020 Art. 7: the administrative document types, in the decree's order.
DECREE30_DOCUMENT_TYPES: tuple[str, ...] = (
    "Nghị quyết",
    "Quyết định",
    "Chỉ thị",
    "Quy chế",
    "Quy định",
    "Thông cáo",
    "Thông báo",
    "Hướng dẫn",
    "Chương trình",
    "Kế hoạch",
    "Phương án",
    "Đề án",
    "Dự án",
    "Báo cáo",
    "Biên bản",
    "Tờ trình",
    "Hợp đồng",
    "Công văn",
    "Công điện",
    "Bản ghi nhớ",
    "Bản thỏa thuận",
    "Giấy ủy quyền",
    "Giấy mời",
    "Giấy giới thiệu",
    "Giấy nghỉ phép",
    "Phiếu gửi",
    "Phiếu chuyển",
    "Phiếu báo",
    "Thư công",
)


def _frozen(mapping: Mapping[int, str]) -> Mapping[int, str]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class CodeTables:
    """The numeric codes an agency's hub expects, each as ``{code: label}``.

    Replace any table to match a hub whose codes differ, e.g.
    ``CodeTables(priority={0: "Thường", 1: "Khẩn", 2: "Thượng khẩn", 3: "Hỏa tốc"})``.
    """

    priority: Mapping[int, str] = field(
        default_factory=lambda: _frozen(dict(enumerate(URGENCY_LEVELS)))
    )
    """``OtherInfo/Priority`` → the urgency (độ khẩn) of the archive's metadata."""
    steering: Mapping[int, str] = field(
        default_factory=lambda: _frozen(
            {
                0: "Không phải văn bản chỉ đạo",
                1: "Văn bản chỉ đạo",
                2: "Báo cáo thực hiện văn bản chỉ đạo",
            }
        )
    )
    """``SteeringType`` → its meaning."""
    document_types: Mapping[int, str] = field(
        default_factory=lambda: _frozen(
            {n: name for n, name in enumerate(DECREE30_DOCUMENT_TYPES, start=1)}
        )
    )
    """``DocumentType/Type`` → the type name (TypeName)."""
    other_document_type: int = 0
    """The ``Type`` sent for a type name outside :attr:`document_types`."""

    def priority_code(self, urgency: str | None) -> int:
        """The ``Priority`` for an urgency label (None: the first code, ordinary)."""
        if urgency is None:
            return min(self.priority)
        for code, label in self.priority.items():
            if fold(label) == fold(urgency):
                return code
        raise UnsupportedMetadata("exchange.metadata.unknown_code", field="urgency", value=urgency)

    def urgency_of(self, code: int) -> str:
        """The urgency label of a ``Priority`` code."""
        try:
            return self.priority[code]
        except KeyError:
            raise UnsupportedMetadata(
                "exchange.metadata.unknown_code", field="Priority", value=str(code)
            ) from None

    def check_steering(self, code: int) -> int:
        """``code`` if the steering table knows it."""
        if code not in self.steering:
            raise UnsupportedMetadata(
                "exchange.metadata.unknown_code", field="SteeringType", value=str(code)
            )
        return code

    def document_type_code(self, type_name: str) -> int:
        """The ``Type`` of a type name (diacritics and case ignored)."""
        wanted = fold(type_name.strip())
        for code, name in self.document_types.items():
            if fold(name) == wanted:
                return code
        return self.other_document_type


DEFAULT_CODE_TABLES = CodeTables()
