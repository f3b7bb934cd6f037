"""Studies of training-inference mismatch (``python -m agentrl.study``).

- ``mismatch``: train from one cached starting policy under a controlled mismatch (staleness, bf16 or
  fp8-like rollouts, kernel noise, vLLM) with ALP and the corrections in use, several paired seeds each;
  write per-run metrics, a Markdown report with paired differences and PNG plots
  (:mod:`agentrl.study.mismatch`, :mod:`agentrl.study.run`, :mod:`agentrl.study.report`).
- ``drift``: replay a run's saved trajectories through the trainer and split the log-ratio drift by cause
  (:mod:`agentrl.study.drift`).
- ``report``: rebuild a study's report (and the study section of docs/results.md).

Mismatch injection lives in :mod:`agentrl.inference.mismatch`; method labels in :mod:`agentrl.study.methods`.
See docs/study.md.
"""
