"""omk: run teams of AI coding agents toward verified engineering outcomes.

The Python face of the omk Rust library. Every call goes through the same
core as the ``omk`` CLI, the C ABI, the MCP server and the dashboard.
"""

from omk._omk import __version__, version

__all__ = ["__version__", "version"]
