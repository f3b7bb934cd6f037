"""The sandbox server and its internals (``python -m tools.server``); envs never import from here.

- ``cli``: command line -> ``settings.Settings`` -> uvicorn; ``app``, ``routers``: the FastAPI layer.
- ``service``: runs requests on workers and maps replies to the API; ``workers``: zygote processes and
  the pool that hands them out; ``sessions``: which worker holds each session and its replay journal.
- ``zygote``: the warm fork-server (one per worker image); ``runner``: the sandboxed child's side;
  ``protocol``: frames between them; ``isolation``: one module per isolation layer.
- ``metrics``, ``auth``: Prometheus text and the bearer-token check.

Nothing is imported here, so the zygote processes start lean.
"""
