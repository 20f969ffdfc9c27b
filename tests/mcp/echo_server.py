"""A small MCP server written with the official Python SDK (FastMCP), for
`omk mcp call/doctor` tests: stdio by default, streamable HTTP on
127.0.0.1:PORT with `--http PORT`."""

import sys

from mcp.server.fastmcp import FastMCP

port = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[1] == "--http" else 0
server = FastMCP("echo", host="127.0.0.1", port=port or 8000)


@server.tool()
def echo(text: str) -> str:
    """Echo the text back."""
    return f"echo: {text}"


@server.tool()
def add(a: int, b: int) -> dict[str, int]:
    """Add two numbers (structured result)."""
    return {"sum": a + b}


@server.tool()
def fail(why: str) -> str:
    """Always fails."""
    raise ValueError(f"failed on purpose: {why}")


if __name__ == "__main__":
    server.run(transport="streamable-http" if port else "stdio")
