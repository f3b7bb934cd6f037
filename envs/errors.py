"""Errors raised by envs. Model output never raises; these are for configuration and infrastructure.

    EnvError
     ├── EnvNotFoundError (also LookupError): unknown id, with the closest registered ids
     ├── RegistrationError: bad or duplicate register() call
     └── ToolUnavailable: a tool's backing service failed (after retries); the episode ends as
                          truncated with stop_reason "tool_error" instead of a reward of 0
"""

from __future__ import annotations


class EnvError(Exception):
    pass


class EnvNotFoundError(EnvError, LookupError):
    pass


class RegistrationError(EnvError, ValueError):
    pass


class ToolUnavailable(EnvError):
    pass
