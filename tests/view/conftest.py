"""Fixtures for the run viewer: a realistic run directory, a 10k-episode run, a live server, a browser.

The builders live in viewer_fixtures.py (a uniquely named module, so tests can import its constants
without clashing with other folders' conftest modules).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from viewer_fixtures import (
    CHROMEDRIVER,
    CHROMIUM,
    CONFIG_YAML,
    HOSTILE_STEP,
    LOGGED_STEPS,
    NUM_METRIC_STEPS,
    LiveServer,
    browser_missing,
    hostile_trajectories,
    rollout_trajectories,
    write_metrics,
)

from agentrl.rollout.trajectory import write_jsonl


@pytest.fixture(scope="session")
def tiny_tok():
    from transformers import AutoTokenizer

    from agentrl.tiny import build_tiny

    return AutoTokenizer.from_pretrained(build_tiny("tiny"))


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, tiny_tok) -> Path:
    root = tmp_path_factory.mktemp("runs") / "tiny-demo"
    (root / "trajectories").mkdir(parents=True)
    tiny_tok.save_pretrained(root / "tokenizer")
    (root / "config.yaml").write_text(CONFIG_YAML, encoding="utf-8")
    write_metrics(root / "metrics.jsonl", NUM_METRIC_STEPS)
    (root / "eval.json").write_text(json.dumps({"before": {"accuracy": 0.08, "tool_call_rate": 0.1},
                                                "after": {"accuracy": 0.78, "tool_call_rate": 1.0}}))
    for step in LOGGED_STEPS:
        write_jsonl(root / "trajectories" / f"step_{step:06d}.jsonl", rollout_trajectories(tiny_tok, step))
    write_jsonl(root / "trajectories" / f"step_{HOSTILE_STEP:06d}.jsonl", hostile_trajectories(tiny_tok))
    (root / "checkpoints").mkdir()  # ignored by the viewer
    return root


@pytest.fixture(scope="session")
def second_run(tmp_path_factory, run_dir) -> Path:
    """A second run to overlay: its own metrics, no trajectories."""
    root = tmp_path_factory.mktemp("runs2") / "baseline"
    root.mkdir()
    shutil.copy(run_dir / "config.yaml", root / "config.yaml")
    write_metrics(root / "metrics.jsonl", 40, seed=1, scale=0.7)
    return root


@pytest.fixture(scope="session")
def big_run(tmp_path_factory, run_dir) -> Path:
    """10,000 episodes over 20 steps, replicated cheaply from real records with fields changed."""
    root = tmp_path_factory.mktemp("big") / "big"
    (root / "trajectories").mkdir(parents=True)
    shutil.copytree(run_dir / "tokenizer", root / "tokenizer")
    write_metrics(root / "metrics.jsonl", 20)
    base = [json.loads(line) for line in (run_dir / "trajectories" / "step_000010.jsonl").open()]
    reasons = ["stop", "max_turns", "length", "tool_error"]
    for step in range(20):
        with open(root / "trajectories" / f"step_{step:06d}.jsonl", "w", encoding="utf-8") as f:
            for i in range(500):
                rec = dict(base[i % len(base)])
                rec.update(reward=(i % 10) / 10, stop_reason=reasons[i % 4], env_id=f"env-{i % 3}",
                           group_id=i // 8, sample_id=i % 8, task_id=f"t{step}-{i}")
                f.write(json.dumps(rec) + "\n")
    return root


@pytest.fixture(scope="session")
def live_server(run_dir, second_run):
    with LiveServer([run_dir, second_run]) as server:
        yield server


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    why = browser_missing()
    if why:
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1500,1300",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture
def artifacts(tmp_path) -> Path:
    """Where screenshots go: $AGENTRL_ARTIFACTS (kept by CI) or the test's tmp_path."""
    path = Path(os.environ.get("AGENTRL_ARTIFACTS") or tmp_path)
    path.mkdir(parents=True, exist_ok=True)
    return path
