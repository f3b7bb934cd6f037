"""The viewer page in headless Chromium (Selenium + Debian's chromium-driver).

Skipped with the reason when /usr/bin/chromium, /usr/bin/chromedriver or the selenium package is missing.
Screenshots go to $AGENTRL_ARTIFACTS (default: the test's tmp_path).
"""

from __future__ import annotations

import json
import time

import pytest
from viewer_fixtures import HOSTILE, HOSTILE_STEP, HUGE_LINE, browser_missing

from agentrl.rollout.trajectory import TokenKind, read_jsonl

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(browser_missing() is not None, reason=f"no headless browser: {browser_missing()}"),
]

WAIT_S = 60.0  # generous: two CPU cores shared with other jobs


def wait_for(driver, js: str, what: str, timeout: float = WAIT_S):
    """Poll a JavaScript expression until it is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(f"return ({js});")
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} ({js})")
        time.sleep(0.1)


def console_errors(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def open_page(driver, url: str) -> None:
    driver.get("about:blank")  # a fresh load even when only the #fragment differs
    driver.get_log("browser")  # drop what earlier tests left
    driver.get(url)
    ready = wait_for(driver, "document.body.dataset.ready", "the page to finish loading")
    assert ready == "1", driver.find_element("id", "status").text


def select(driver, name: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("css selector", f'#filters [name="{name}"]')).select_by_value(value)


def page_info(driver) -> str:
    return driver.find_element("id", "page-info").text


def rows(driver) -> list[dict]:
    return driver.execute_script("""
        return [...document.querySelectorAll('#episode-table tbody tr[data-step]')].map(tr => ({
          step: Number(tr.dataset.step), index: Number(tr.dataset.index),
          stop: tr.querySelector('.stop').textContent, env: tr.querySelector('.env').textContent}));""")


def set_filters(driver, **values) -> None:
    """Change filters and wait for the list to answer (the page info text changes or rows match)."""
    for name, value in values.items():
        before = driver.execute_script("return document.querySelector('#episode-table tbody').innerHTML")
        select(driver, name, value)
        wait_for(driver, f"document.querySelector('#episode-table tbody').innerHTML !== {json.dumps(before)}"
                 " && document.getElementById('status').textContent === ''",
                 f"the list to refilter by {name}={value}")


def open_episode(driver, step: int, index: int) -> None:
    driver.find_element("css selector", f'#episode-table tr[data-step="{step}"][data-index="{index}"]').click()
    wait_for(driver, f"document.querySelector('#episode h3') && document.querySelector('#episode h3')"
             f".textContent === 'step {step} · episode {index}'", f"episode {step}/{index} to render")


def assert_not_pwned(driver) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 - reading it is the check
    assert driver.execute_script("return window.__pwned === undefined")
    counts = driver.execute_script("""const e = document.getElementById('episode');
        return [e.querySelectorAll('img,script,iframe,textarea,svg,b').length, document.images.length];""")
    assert counts == [0, 0]


def check_curves(driver) -> None:
    panels = driver.execute_script("""return [...document.querySelectorAll('.panel')].map(p => ({
        key: p.dataset.panel, title: p.querySelector('h3').textContent,
        lines: [...p.querySelectorAll('path.line')].map(l => [l.dataset.series, l.getAttribute('d').split('L').length]),
        legend: [...p.querySelectorAll('.legend .item')].map(i => i.textContent)}));""")
    keys = {p["key"] for p in panels}
    assert {"reward", "ratio", "kl", "clip", "sigma", "lengths", "entropy", "loss", "perf"} <= keys
    for p in panels:
        assert p["lines"], f"panel {p['title']} drew no line"
        assert max(n for _, n in p["lines"]) > 10, f"panel {p['title']} lines have too few points"
    reward = next(p for p in panels if p["key"] == "reward")
    assert "tiny-demo · rollout/reward_mean" in reward["legend"]
    assert "baseline · rollout/reward_mean" in reward["legend"]  # two runs overlaid


def test_page_loads_draws_curves_and_config(browser, live_server, artifacts):
    open_page(browser, live_server.url)
    check_curves(browser)
    text = browser.find_element("id", "config").text
    assert "loss_type" in text and "<script>alert('config')</script>" in text
    assert browser.execute_script("return document.querySelectorAll('#config script').length") == 0
    assert "0.78" in text  # eval.json after
    assert page_info(browser).endswith(f"of {12 * 5 + len(HOSTILE) + 1}")
    count = "document.querySelectorAll('.panel[data-panel=kl] path.line').length"
    assert browser.execute_script(f"return {count}") == 2
    browser.find_element("css selector", ".panel[data-panel=kl] .legend .item").click()  # hide a series
    wait_for(browser, f"{count} === 1", "the clicked legend entry to hide its line")
    browser.save_screenshot(str(artifacts / "viewer-curves.png"))
    assert console_errors(browser) == []


def test_filtering_by_step_stop_reason_env_and_reward(browser, live_server):
    open_page(browser, live_server.url)
    set_filters(browser, stop_reason="max_turns")
    got = rows(browser)
    assert got and all(r["stop"] == "max_turns" for r in got)
    assert page_info(browser).endswith(f"of {len(got)}")
    set_filters(browser, step="10")
    got = rows(browser)
    assert got and all(r["step"] == 10 and r["stop"] == "max_turns" for r in got)
    set_filters(browser, stop_reason="", env="calc-hard-v0")
    got = rows(browser)
    assert len(got) == 4 and all(r["env"] == "calc-hard-v0" and r["step"] == 10 for r in got)
    set_filters(browser, env="", step="")
    reward = browser.find_element("css selector", '#filters [name="min_reward"]')
    reward.send_keys("0.5")
    before = page_info(browser)
    browser.execute_script("document.getElementById('filters').dispatchEvent(new Event('change'))")
    wait_for(browser, f"document.getElementById('page-info').textContent !== {json.dumps(before)}", "reward filter")
    assert all(r["stop"] == "stop" for r in rows(browser))  # reward 1 only comes with a boxed answer
    assert console_errors(browser) == []


def test_paging(browser, live_server):
    open_page(browser, live_server.url)
    first = rows(browser)
    assert len(first) == 50 and page_info(browser).startswith("1–50 of")
    browser.find_element("id", "next").click()
    wait_for(browser, "document.getElementById('page-info').textContent.startsWith('51–')", "page two")
    second = rows(browser)
    assert second and {(r["step"], r["index"]) for r in second}.isdisjoint({(r["step"], r["index"]) for r in first})
    assert browser.find_element("id", "next").get_attribute("disabled")


def test_episode_shows_masked_spans_and_token_hover(browser, live_server, run_dir, artifacts, tiny_tok):
    from selenium.webdriver.common.action_chains import ActionChains

    records = read_jsonl(run_dir / "trajectories" / "step_000000.jsonl")
    index = next(i for i, r in enumerate(records)
                 if TokenKind.MASKED in r.token_kinds and "learner_ratio" in r.info and r.tool_calls)
    rec = records[index]
    open_page(browser, live_server.url)
    set_filters(browser, step="0")
    open_episode(browser, 0, index)
    spans = browser.execute_script("""return [...document.querySelectorAll('#episode .span')].map(s =>
        [s.dataset.kind, Number(s.dataset.start), Number(s.dataset.end), s.textContent]);""")
    expected = [(kind, a, b) for kind, a, b in rec.spans()]
    assert [(k, a, b) for k, a, b, _ in spans] == [(kind.name.lower(), a, b) for kind, a, b in expected]
    for _, a, b, text in spans:
        assert text == tiny_tok.decode(rec.token_ids[a:b])
    masked = browser.find_elements("css selector", "#episode .span.kind-masked")
    assert masked and all(m.value_of_css_property("text-decoration-line") == "line-through" for m in masked)
    assert browser.execute_script(
        "return getComputedStyle(document.querySelector('#episode .span.kind-masked'), '::before').content"
    ) == '"masked"'
    tools = browser.find_element("css selector", "#episode table.tools").text
    assert "Finished" in tools and "python" in tools
    t = next(i for i, k in enumerate(rec.token_kinds) if k == TokenKind.SAMPLED)
    token = browser.find_element("css selector", f'#episode .tok[data-i="{t}"]')
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", token)
    ActionChains(browser).move_to_element(token).perform()
    tip = wait_for(browser, "!document.getElementById('tooltip').hidden && "
                   "document.getElementById('tooltip').textContent", "the token tooltip")
    assert f"id {rec.token_ids[t]}" in tip and "behavior logprob -0.4" in tip
    assert f"learner ratio {rec.info['learner_ratio'][t]:.4g}" in tip
    select_colour = 'document.querySelector(\'#episode select[name="colour"]\')'
    browser.execute_script(f"{select_colour}.value = 'ratio'; {select_colour}.dispatchEvent(new Event('change'))")
    wait_for(browser, f"document.querySelector('#episode .tok[data-i=\"{t}\"]').style.background !== ''",
             "tokens coloured by learner ratio")
    browser.execute_script(f"{select_colour}.value = 'kind'; {select_colour}.dispatchEvent(new Event('change'))")
    token = browser.find_element("css selector", f'#episode .tok[data-i="{t}"]')
    browser.execute_script("window.scrollTo(0, document.getElementById('episodes-section').offsetTop - 60)")
    ActionChains(browser).move_to_element(token).perform()
    browser.save_screenshot(str(artifacts / "viewer-episode.png"))
    assert console_errors(browser) == []


def test_deep_link_and_keyboard(browser, live_server):
    from selenium.webdriver.common.keys import Keys

    open_page(browser, live_server.url + "#run=0&step=20&episode=5")
    wait_for(browser, "document.querySelector('#episode h3') && "
             "document.querySelector('#episode h3').textContent === 'step 20 · episode 5'", "the linked episode")
    assert {r["step"] for r in rows(browser)} == {20}
    browser.find_element("tag name", "body").send_keys("j")
    wait_for(browser, "document.querySelector('#episode h3').textContent === 'step 20 · episode 6'", "j: next")
    browser.find_element("tag name", "body").send_keys(Keys.ARROW_UP, Keys.ARROW_UP)
    wait_for(browser, "document.querySelector('#episode h3').textContent === 'step 20 · episode 4'", "up twice")
    assert browser.execute_script("return location.hash") == "#run=0&step=20&episode=4"
    assert console_errors(browser) == []


def test_hostile_model_output_is_shown_as_text(browser, live_server, artifacts):
    open_page(browser, live_server.url)
    set_filters(browser, env="hostile-v0")
    for index, text in enumerate([*HOSTILE, HUGE_LINE]):
        open_episode(browser, HOSTILE_STEP, index)
        assert_not_pwned(browser)
        shown = browser.execute_script(
            "return [...document.querySelectorAll('#episode .turn-body')].map(b => b.textContent).join('')")
        assert text in shown
        task = browser.execute_script("return document.querySelector('#episode .meta-grid .v').textContent")
        assert task == text[:2000]
        width = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], "a long line widened the page"
    assert browser.find_elements("css selector", "#episode .bulk-note")  # 200k tokens drawn as one run
    browser.save_screenshot(str(artifacts / "viewer-hostile.png"))
    assert console_errors(browser) == []


def test_exported_file_works_offline(browser, run_dir, second_run, tmp_path, artifacts):
    from agentrl.view.export import export

    out = export([run_dir, second_run], tmp_path / "export.html", episodes_per_step=4)
    open_page(browser, out.as_uri())
    check_curves(browser)
    assert page_info(browser).endswith(f"of {4 * 6}")
    set_filters(browser, stop_reason="max_turns")
    assert all(r["stop"] == "max_turns" for r in rows(browser))
    set_filters(browser, stop_reason="", step=str(HOSTILE_STEP))
    for index in range(4):
        open_episode(browser, HOSTILE_STEP, index)
        assert_not_pwned(browser)
        assert HOSTILE[index] in browser.execute_script(
            "return document.querySelector('#episode .turns').textContent")
    browser.save_screenshot(str(artifacts / "viewer-export.png"))
    assert console_errors(browser) == []


def test_ten_thousand_episodes_stay_responsive(browser, big_run):
    from viewer_fixtures import LiveServer

    with LiveServer([big_run]) as server:
        open_page(browser, server.url)
        assert page_info(browser) == "1–50 of 10,000"
        for _ in range(3):
            before = page_info(browser)
            browser.find_element("id", "next").click()
            wait_for(browser, f"document.getElementById('page-info').textContent !== {json.dumps(before)}",
                     "the next page", timeout=10)
        assert page_info(browser) == "151–200 of 10,000"
        set_filters(browser, step="19", stop_reason="length")
        assert page_info(browser) == "1–50 of 125"
        first = rows(browser)[0]
        open_episode(browser, first["step"], first["index"])
        assert browser.execute_script("return document.querySelectorAll('#episode-table tbody tr').length") == 50
        assert console_errors(browser) == []


def test_refresh_picks_up_a_run_still_training(browser, run_dir, tmp_path):
    import shutil

    from viewer_fixtures import LiveServer

    live = tmp_path / "live"
    shutil.copytree(run_dir, live, ignore=shutil.ignore_patterns("step_000045.jsonl"))
    with LiveServer([live]) as server:
        open_page(browser, server.url)
        assert page_info(browser) == "1–50 of 60"
        panels_before = browser.execute_script("return document.querySelectorAll('.panel').length")
        shutil.copy(live / "trajectories" / "step_000040.jsonl", live / "trajectories" / "step_000050.jsonl")
        with open(live / "metrics.jsonl", "a") as f:
            f.write("\n" + json.dumps({"step": 50, "time": 150.0, "rollout/reward_mean": 0.9, "new/metric": 1.0}) + "\n")
        browser.find_element("id", "refresh").click()
        wait_for(browser, "document.getElementById('page-info').textContent === '1–50 of 72'", "the new step")
        assert "50" in [o.get_attribute("value") for o in
                        browser.find_elements("css selector", '#filters [name="step"] option')]
        wait_for(browser, f"document.querySelectorAll('.panel').length === {panels_before + 1}", "the new panel")
        assert console_errors(browser) == []
