"""Type stubs for the native module omk._omk (hand-written)."""

__version__: str

def version() -> str:
    """The omk version, identical to ``omk --version``."""
