"""PDF signing (PAdES), appearances, timestamps and, later, verification."""
