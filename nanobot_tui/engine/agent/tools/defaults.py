"""The agent's default toolset, as the config (agent.*) asks for it."""

from __future__ import annotations

from nanobot_tui.engine.agent.tools.context import context_tools
from nanobot_tui.engine.agent.tools.registry import ToolRegistry
from nanobot_tui.engine.agent.tools.shell import shell_tool
from nanobot_tui.engine.agent.tools.workspace import Workspace, workspace_tools
from nanobot_tui.engine.context.micro_tools import ContextStore

SHELL_OFF = "shell is turned off in the config (agent.shell)"


def default_tools(
    ws: Workspace,
    store: ContextStore | None,
    *,
    shell: bool,
    shell_timeout: float,
    output_chars: int,
) -> ToolRegistry:
    """The file tools, the context tools when there is a store, and the shell tool only
    when `shell` is on; a call to the shell while it is off says how to turn it on."""
    tools = workspace_tools(ws, output_chars=output_chars)
    if store is not None:
        tools += context_tools(store, output_chars=output_chars)
    registry = ToolRegistry(tools, output_chars=output_chars)
    if shell:
        registry.add(shell_tool(ws, timeout=shell_timeout, output_chars=output_chars))
    else:
        registry.explain_missing("shell", SHELL_OFF)
    return registry
