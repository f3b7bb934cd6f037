"""An MCP server (official ``mcp`` SDK) offering the MultiTool env's ``lookup`` and ``calculator``.

    python examples/mcp_env/inventory_server.py                      # stdio (an MCP client starts it)
    python examples/mcp_env/inventory_server.py --http --port 8000   # streamable HTTP on 127.0.0.1

An env takes its tools from it with ``envs.mcp.MCPToolEnv`` (see docs/envs.md); the kit's tests start
it both ways.
"""

import argparse
import functools

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from envs.multitool_env import calculator, lookup

server = MCPServer("inventory", log_level="WARNING")



def reported(function):
    """The tool's own errors go back to the model as their message (a ToolError), not as a crash."""

    @functools.wraps(function)
    def tool(**arguments):
        try:
            return function(**arguments)
        except (KeyError, ValueError) as e:
            raise ToolError(str(e).strip('"')) from None

    return tool


server.add_tool(reported(lookup))
server.add_tool(reported(calculator))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", action="store_true", help="serve streamable HTTP instead of stdio")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    if args.http:
        server.run("streamable-http", host="127.0.0.1", port=args.port)
    else:
        server.run()
