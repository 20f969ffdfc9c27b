"""omk: run teams of AI coding agents toward verified engineering outcomes.

The Python face of the omk Rust library. Every call goes through the same
core as the ``omk`` CLI, the C ABI, the MCP server and the dashboard, and
returns the same JSON documents (as dicts and lists) as ``omk ... --json``.

    import omk
    o = omk.Omk(state_dir="/tmp/omk-state", project_dir=".")
    print(o.doctor()["status"])
    team = o.team_run("2:executor", "Add input validation", subtasks=["--name", "--spec"])
    print(team["phase"], team["tokens"])

Errors raise :class:`OmkError` subclasses, one per stable error code
(``err.code``): :class:`InvalidInputError`, :class:`NotFoundError`,
:class:`ConflictError`, :class:`CorruptStateError`, :class:`AgentError`,
:class:`OmkTimeoutError`, :class:`CancelledError`, :class:`OmkIOError`.
See docs/python.md.
"""

from omk._omk import (
    AgentError,
    CancelledError,
    ConflictError,
    CorruptStateError,
    InvalidInputError,
    NotFoundError,
    Omk,
    OmkError,
    OmkIOError,
    OmkTimeoutError,
    TeamEvents,
    __version__,
    version,
)

__all__ = [
    "AgentError",
    "CancelledError",
    "ConflictError",
    "CorruptStateError",
    "InvalidInputError",
    "NotFoundError",
    "Omk",
    "OmkError",
    "OmkIOError",
    "OmkTimeoutError",
    "TeamEvents",
    "__version__",
    "version",
]
