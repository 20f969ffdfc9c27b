"""An MCP server that never answers: reads stdin forever."""

import sys

for _ in sys.stdin:
    pass
