"""Function tools the model can call: the registry, the `@tool` decorator teams use in their own modules
(`from bot.tools import ToolContext, tool`), and the built-ins."""

from bot.tools.builtins import BUILTIN_TOOLS, builtin, registry_from
from bot.tools.registry import FunctionTool, ToolContext, ToolRegistry, tool, tools_in

__all__ = [
    "BUILTIN_TOOLS",
    "FunctionTool",
    "ToolContext",
    "ToolRegistry",
    "builtin",
    "registry_from",
    "tool",
    "tools_in",
]
