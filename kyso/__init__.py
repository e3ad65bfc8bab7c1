"""kyso: signing, timestamping, archiving and verifying official documents."""

__version__ = "0.1.0"
