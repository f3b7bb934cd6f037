"""HTTP routers: run_code (and sessions), health, metrics."""
