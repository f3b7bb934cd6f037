"""The sandboxed Python tool server and its clients (knows nothing about RL).

- ``python -m tools.server``: the FastAPI server (see docs/sandbox.md).
- ``tools.client``: ``SandboxClient`` (async) and ``SyncSandboxClient``.
- ``tools.embedded``: ``EmbeddedSandbox`` and ``shared_sandbox_url()`` for training and tests.
- ``tools.schema`` / ``tools.errors``: the API models and the client's exceptions.

Nothing is imported here, so the zygote processes start lean.
"""
