"""The sandboxed Python tool server and its clients (knows nothing about RL).

What envs and users import (stable paths):

- ``tools.client``: ``SandboxClient`` (async), ``SyncSandboxClient`` and ``SandboxPool`` (several servers).
- ``tools.embedded``: ``EmbeddedSandbox`` and ``shared_sandbox_url()`` for training and tests.
- ``tools.schema`` / ``tools.errors``: the API models and the client's exceptions.

The server and the sandbox internals live in ``tools.server`` (``python -m tools.server``; see
docs/sandbox.md). Nothing is imported here, so the zygote processes start lean.
"""
