"""Example third-party env package for agentrl (see docs/envs.md)."""

from .env import ConvertTool, UnitConversionEnv, UnitTasks

__all__ = ["ConvertTool", "UnitConversionEnv", "UnitTasks"]
