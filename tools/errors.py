"""Exceptions raised by the sandbox client.

    SandboxClientError            base of everything the client raises
    ├── SandboxUnavailable        could not connect (after the retries)
    │   └── SessionLost           (tools.client) a pooled session could not be moved to another server
    ├── SandboxOverloaded         429 from the server (after the retries)
    ├── SandboxHTTPError          any other non-2xx answer; carries status_code and body
    │   └── SandboxAuthError      401: the server wants a (different) bearer token
    └── SandboxTimeout            the server did not answer within the client's timeout

A snippet that fails, loops or runs out of memory is not an exception: it is a RunCodeResponse with
status "Failed" and the run_result saying why.
"""

from __future__ import annotations


class SandboxClientError(Exception):
    """Base class of the client's exceptions."""


class SandboxUnavailable(SandboxClientError):
    """The server could not be reached (connection refused/reset) after the allowed retries."""


class SandboxOverloaded(SandboxClientError):
    """The server kept answering 429 (queue full) after the allowed retries."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SandboxHTTPError(SandboxClientError):
    """A non-2xx answer other than 429 (or 503 after retries)."""

    def __init__(self, status_code: int, body: str) -> None:
        super().__init__(f"sandbox answered HTTP {status_code}: {body[:500]}")
        self.status_code = status_code
        self.body = body


class SandboxAuthError(SandboxHTTPError):
    """401: the server requires a bearer token this client did not send, or sent wrong."""

    def __init__(self, url: str, body: str) -> None:
        super().__init__(401, body)
        self.args = (
            f"the sandbox at {url} refused the request (HTTP 401: missing or wrong bearer token); set "
            "$AGENTRL_SANDBOX_TOKEN (the training config's sandbox.token) or pass token= to the client",
        )


class SandboxTimeout(SandboxClientError):
    """No answer within the client's timeout (connect, read, write or pool)."""
