"""Exchange of documents between agencies: edXML packages (QCVN 102:2016) and status
messages, signed with XML-DSig and checked on receipt.  A library: no settings, no web layer.

* :mod:`kyso.exchange.edxml`: ``build_edxml`` / ``write_edxml``, ``parse_edxml``, the mapping
  to and from the archive's ``DocumentMetadata``.
* :mod:`kyso.exchange.status`: ``build_status`` / ``parse_status`` (signed receipts).
* :mod:`kyso.exchange.codes`: status codes, business types and the configurable code tables.
* :mod:`kyso.exchange.errors`: the ``ExchangeError`` hierarchy.

docs/exchange.md describes the formats as built and what is assumed.
"""
