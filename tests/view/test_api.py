"""The viewer's data layer and JSON API, without a browser: index, metrics, episodes, export, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from viewer_fixtures import HOSTILE, HOSTILE_STEP, HUGE_LINE, LOGGED_STEPS, NUM_METRIC_STEPS

from agentrl.rollout.trajectory import TokenKind, read_jsonl
from agentrl.view.app import create_app
from agentrl.view.export import export, script_json
from agentrl.view.index import EpisodeIndex, EpisodeNotFound, EpisodeQuery, scan_fields, scan_fields_plain
from agentrl.view.metrics import panel_of, panels, read_metrics

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client(run_dir, second_run):
    with TestClient(create_app([run_dir, second_run], warm=False)) as c:
        yield c


# ---- index ---------------------------------------------------------------------------------------
def test_fast_field_scan_agrees_with_plain_parse(run_dir):
    lines = [line for path in sorted((run_dir / "trajectories").glob("*.jsonl")) for line in path.open()]
    assert len(lines) > 60
    for line in lines:
        assert scan_fields(line) == scan_fields_plain(line)
    # another writer's layout: spaces after separators, info first, fields reordered
    data = json.loads(lines[0])
    reordered = {"info": {"reward": 9, "correct": False}, **{k: v for k, v in reversed(data.items()) if k != "info"}}
    spaced = json.dumps(reordered)
    assert scan_fields(spaced) == scan_fields_plain(spaced)
    assert scan_fields(spaced)["reward"] == data["reward"]
    assert scan_fields('{"token_ids": [], "reward": NaN}') == {"token_ids": 0, "reward": pytest.approx(float("nan"),
                                                                                                          nan_ok=True)}


def test_index_follows_a_growing_file_and_ignores_a_torn_line(tmp_path, run_dir):
    (tmp_path / "trajectories").mkdir()
    src = (run_dir / "trajectories" / "step_000010.jsonl").read_text().splitlines(keepends=True)
    path = tmp_path / "trajectories" / "step_000003.jsonl"
    path.write_text("".join(src[:2]))
    index = EpisodeIndex(tmp_path)
    assert index.steps() == [3]
    assert index.query(EpisodeQuery())["total"] == 2
    with open(path, "a") as f:
        f.write(src[2] + src[3][:50])  # one whole line, one still being written
    assert index.query(EpisodeQuery())["total"] == 3
    with open(path, "a") as f:
        f.write(src[3][50:] + "{not json\n")
    page = index.query(EpisodeQuery())
    assert page["total"] == 5 and page["items"][4]["stop_reason"] == "unreadable"
    assert index.read(3, 3) == json.loads(src[3])
    with pytest.raises(EpisodeNotFound, match="not readable JSON"):
        index.read(3, 4)
    # a resumed run rewrites the step file (same name, other episodes, as long or longer): re-indexed
    rewritten = [json.dumps({**json.loads(line), "task_id": f"redo-{i}", "env_id": "redo"}) + "\n"
                 for i, line in enumerate(src[:6])]
    path.write_text("".join(rewritten))
    page = index.query(EpisodeQuery())
    assert page["total"] == 6 and {e["env_id"] for e in page["items"]} == {"redo"}
    assert index.read(3, 5)["task_id"] == "redo-5"


# ---- metrics -------------------------------------------------------------------------------------
def test_metrics_gaps_and_panels(run_dir):
    m = read_metrics(run_dir / "metrics.jsonl")
    assert m.steps == list(range(NUM_METRIC_STEPS)) and m.bad_lines == 1  # the torn last line
    assert m.series["grad_norm"][7] is None and m.series["ratio/max"][8] is None
    assert m.series["kl/mean"][12] is None and m.series["kl/mean"][13] is not None
    assert sum(v is not None for v in m.series["eval/accuracy"]) == 6
    keys = {p["key"]: p["series"] for p in panels(set(m.series))}
    assert list(keys) == ["reward", "ratio", "kl", "clip", "sigma", "lengths", "entropy", "loss", "perf"]
    assert keys["reward"] == ["eval/accuracy", "rollout/accuracy", "rollout/reward_mean"]
    assert keys["sigma"][:2] == ["sigma/layer_0", "sigma/layer_1"] and "sigma/mean" in keys["sigma"]
    assert "rollout/turns_mean" in keys["lengths"] and "rollout/tool_call_rate" in keys["lengths"]
    assert panel_of("ratio/q05") == "ratio" and panel_of("something/else") == "other"
    assert panel_of("sigma/layer_10") == "sigma" and "time" not in sum(keys.values(), [])
    sigmas = [p for p in panels({f"sigma/layer_{i}" for i in range(12)})][0]["series"]
    assert sigmas[9:] == ["sigma/layer_9", "sigma/layer_10", "sigma/layer_11"]  # natural order


def test_api_runs_config_eval_metrics(client, run_dir):
    runs = client.get("/api/runs").json()
    assert [r["name"] for r in runs] == ["tiny-demo", "baseline"]
    assert runs[0]["steps"] == [*LOGGED_STEPS, HOSTILE_STEP] and runs[1]["steps"] == []
    cfg = client.get("/api/config", params={"run": 0}).json()
    assert cfg["data"]["learner"]["loss_type"] == "alp" and "epsilon_high" in cfg["text"]
    assert client.get("/api/eval").json()["after"]["accuracy"] == 0.78
    assert client.get("/api/eval", params={"run": 1}).json() is None
    assert client.get("/api/config", params={"run": 5}).status_code == 404
    metrics = client.get("/api/metrics")
    assert "NaN" not in metrics.text and "Infinity" not in metrics.text  # browsers' JSON.parse rejects them
    body = metrics.json()
    assert [r["name"] for r in body["runs"]] == ["tiny-demo", "baseline"] and len(body["runs"][1]["steps"]) == 40


# ---- episodes ------------------------------------------------------------------------------------
def test_episode_list_filters_and_pages(client):
    everything = client.get("/api/episodes", params={"limit": 500}).json()
    items = everything["items"]
    assert everything["total"] == len(items) == 12 * len(LOGGED_STEPS) + len(HOSTILE) + 1
    assert set(everything["facets"]["stop_reasons"]) >= {"stop", "max_turns"}
    assert set(everything["facets"]["envs"]) == {"calc-v0", "calc-hard-v0", "hostile-v0"}

    def ids(**params):
        page = client.get("/api/episodes", params={"limit": 500, **params}).json()
        assert page["total"] == len(page["items"])
        return [(e["step"], e["index"]) for e in page["items"]]

    def expect(pred):
        return [(e["step"], e["index"]) for e in items if pred(e)]

    assert ids(step=10) == expect(lambda e: e["step"] == 10) and len(ids(step=10)) == 12
    assert ids(stop_reason="max_turns") == expect(lambda e: e["stop_reason"] == "max_turns")
    assert ids(env="calc-hard-v0") == expect(lambda e: e["env_id"] == "calc-hard-v0")
    assert ids(min_reward=0.5) == expect(lambda e: e["reward"] >= 0.5)
    assert ids(max_reward=0.5, step=20) == expect(lambda e: e["reward"] <= 0.5 and e["step"] == 20)
    assert ids(correct="true") == expect(lambda e: e["correct"] is True)
    assert 0 < len(ids(min_reward=0.5)) < len(items)
    page = client.get("/api/episodes", params={"offset": 10, "limit": 7}).json()
    assert [(e["step"], e["index"]) for e in page["items"]] == [(e["step"], e["index"]) for e in items[10:17]]
    assert client.get("/api/episodes", params={"limit": 100000}).status_code == 422


def test_episode_tokens_match_the_record(client, run_dir, tiny_tok):
    records = read_jsonl(run_dir / "trajectories" / "step_000020.jsonl")
    for index, rec in enumerate(records):
        ep = client.get(f"/api/episode/20/{index}").json()
        tk = ep["tokens"]
        assert tk["id"] == rec.token_ids and tk["kind"] == rec.token_kinds
        assert "".join(tk["text"]) == tiny_tok.decode(rec.token_ids)
        assert tk["logprob"] == rec.behavior_logprobs and tk["turn"] == rec.turn_ids
        assert ep["reward"] == rec.reward and ep["stop_reason"] == rec.stop_reason
        assert ep["tool_calls"] == rec.tool_calls
        if "learner_ratio" in rec.info:
            assert ep["has_ratio"] and tk["ratio"] == rec.info["learner_ratio"]
            assert "learner_ratio" not in ep["info"]  # per-token, shown on hover, not in the info block
        else:
            assert not ep["has_ratio"] and tk["ratio"] == [None] * len(rec)
    assert any(TokenKind.MASKED in r.token_kinds for r in records)
    missing = client.get("/api/episode/20/999")
    assert missing.status_code == 404 and "12 episodes" in missing.json()["detail"]
    assert client.get("/api/episode/7/0").status_code == 404


def test_hostile_text_is_returned_as_data(client):
    for index, text in enumerate([*HOSTILE, HUGE_LINE]):
        ep = client.get(f"/api/episode/{HOSTILE_STEP}/{index}").json()
        joined = "".join(ep["tokens"]["text"])
        assert text in joined
        assert ep["info"]["task"] == text[:2000]


def test_ten_thousand_episodes_page_quickly(big_run):
    with TestClient(create_app([big_run], warm=False)) as c:
        first = time.perf_counter()
        page = c.get("/api/episodes", params={"limit": 50}).json()
        build_s = time.perf_counter() - first
        assert page["total"] == 10_000 and len(page["items"]) == 50
        assert build_s < 10, f"indexing 10k episodes took {build_s:.1f} s"  # generous: 2 shared cores
        for params in ({"offset": 9950}, {"stop_reason": "length", "offset": 2000}, {"env": "env-1", "step": 7},
                       {"min_reward": 0.85}):
            t = time.perf_counter()
            page = c.get("/api/episodes", params={"limit": 50, **params}).json()
            assert time.perf_counter() - t < 1.0, params
            assert page["items"]
        assert c.get("/api/episodes", params={"min_reward": 0.85}).json()["total"] == 1000
        t = time.perf_counter()
        ep = c.get("/api/episode/13/321").json()
        assert time.perf_counter() - t < 1.0 and ep["task_id"] == "t13-321"


def test_bare_run_directory_degrades_gracefully(tmp_path):
    bare = tmp_path / "bare"
    (bare / "trajectories").mkdir(parents=True)
    record = {"token_ids": [1, 99999, 2], "loss_mask": [0, 1, 0], "behavior_logprobs": [0, -0.1, 0],
              "turn_ids": [0, 1, 1], "policy_version": [-1, 0, -1], "token_kinds": [0, 1, 2],
              "prompt_length": 1, "reward": float("nan"), "stop_reason": "stop", "info": {"learner_ratio": [1]}}
    (bare / "trajectories" / "step_5.jsonl").write_text(json.dumps(record) + "\n")
    with TestClient(create_app([bare], warm=False)) as c:
        assert c.get("/api/config").json() == {"text": None, "data": None}
        assert c.get("/api/eval").json() is None
        assert c.get("/api/metrics").json()["panels"] == []
        page = c.get("/api/episodes").json()
        assert page["total"] == 1 and page["items"][0]["reward"] is None
        ep = c.get("/api/episode/5/0").json()  # no tokenizer folder: ids as text; NaN reward as null
        assert ep["tokens"]["text"] == ["<1>", "<99999>", "<2>"] and ep["reward"] is None
        assert ep["tokens"]["ratio"] == [None] * 3 and not ep["has_ratio"]  # misaligned ratio ignored
        assert c.get("/").status_code == 200 and c.get("/static/viewer.js").status_code == 200


def test_out_of_vocabulary_ids_are_shown_not_fatal(run_dir):
    from agentrl.view.tokens import TokenText

    text = TokenText.from_dir(run_dir / "tokenizer")
    assert text.byte_level
    assert text.texts([10**7]) == [f"<unk:{10**7}>"]


# ---- export and CLI ------------------------------------------------------------------------------
def test_script_json_cannot_close_its_element():
    text = script_json({"a": "</script><script>alert(1)</script><!-- \u2028", "b": "&amp;"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"a": "</script><script>alert(1)</script><!-- \u2028", "b": "&amp;"}


def test_export_is_self_contained_and_escaped(tmp_path, run_dir, second_run):
    out = export([run_dir, second_run], tmp_path / "view.html", episodes_per_step=3)
    html = out.read_text(encoding="utf-8")
    assert html.count("<script") == 2  # the JSON data element and the viewer's code
    assert 'src="http' not in html and 'href="http' not in html and "/static/" not in html
    assert "@import" not in html and "url(" not in html
    for bad in ("<script>alert", "<img src=x", "</textarea>", "alert(2)</script>"):
        assert bad not in html
    data = json.loads(html.split('type="application/json">', 1)[1].split("</script>", 1)[0])
    assert len(data["episodes"][0]["summaries"]) == 3 * (len(LOGGED_STEPS) + 1)
    assert data["episodes"][0]["full"][f"{HOSTILE_STEP}/0"]["info"]["task"] == HOSTILE[0]


def test_cli_export_and_help(tmp_path, run_dir):
    out = tmp_path / "cli.html"
    done = subprocess.run([sys.executable, "-m", "agentrl.view", str(run_dir), "--export", str(out),
                           "--export-episodes", "1"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 10_000 and "wrote" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "agentrl.view", str(tmp_path / "nope")], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not a directory" in bad.stderr


def test_importing_the_viewer_does_not_import_torch():
    code = ("import sys, agentrl.view, agentrl.view.app, agentrl.view.export, agentrl.view.__main__; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
