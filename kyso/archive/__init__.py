"""The archive: object storage (``kyso.archive.storage``), catalog, retention and fixity."""
