"""Admission: calls whose previous answers went out together go to the backend together (bounded waits)."""

from __future__ import annotations

import asyncio
import threading
import time

from agentrl.proxy.admission import Admission


async def _call(adm: Admission, session: str, delay: float, released: dict[str, float], t0: float) -> None:
    await asyncio.sleep(delay)
    arrival = adm.arrived(session)
    await adm.wait(*arrival)
    released[session] = time.monotonic() - t0


async def test_a_cohort_goes_together():
    adm = Admission(burst_gap_s=0.02, stall_s=0.2, max_wait_s=1.0)
    for s in ("a", "b", "c"):  # one burst of answers
        adm.answered(s)
    released: dict[str, float] = {}
    t0 = time.monotonic()
    await asyncio.gather(*(_call(adm, s, d, released, t0) for s, d in (("a", 0.0), ("b", 0.05), ("c", 0.1))))
    assert max(released.values()) - min(released.values()) < 0.03  # released together, when c arrived
    assert 0.09 < min(released.values()) < 0.3


async def test_waits_are_bounded_by_stalls_closing_and_max_wait():
    # a cohort member that never calls again holds the others for stall_s after the last member's arrival
    adm = Admission(burst_gap_s=0.02, stall_s=0.15, max_wait_s=1.0)
    for s in ("a", "gone"):
        adm.answered(s)
    released: dict[str, float] = {}
    t0 = time.monotonic()
    await _call(adm, "a", 0.0, released, t0)
    assert 0.14 < released["a"] < 0.4
    # ... and not once its session closes, also while the call waits (closed from another thread)
    adm = Admission(burst_gap_s=0.02, stall_s=0.5, max_wait_s=1.0)
    for s in ("a", "later"):
        adm.answered(s)
    released = {}
    t0 = time.monotonic()
    asyncio.get_running_loop().call_later(0.03, lambda: threading.Thread(target=adm.forget, args=("later",)).start())
    await _call(adm, "a", 0.0, released, t0)
    assert 0.025 < released["a"] < 0.2
    # never past max_wait_s
    adm = Admission(burst_gap_s=0.02, stall_s=5.0, max_wait_s=0.1)
    for s in ("a", "gone"):
        adm.answered(s)
    released = {}
    t0 = time.monotonic()
    await _call(adm, "a", 0.0, released, t0)
    assert 0.09 < released["a"] < 0.3


async def test_answers_far_apart_are_different_cohorts_and_first_calls_wait_for_quiet():
    adm = Admission(quiet_s=0.02, burst_gap_s=0.01, stall_s=0.5, max_wait_s=1.0)
    adm.answered("early")
    await asyncio.sleep(0.05)
    adm.answered("late")  # another burst: "late" does not wait for "early"
    released: dict[str, float] = {}
    t0 = time.monotonic()
    await _call(adm, "late", 0.0, released, t0)
    assert released["late"] < 0.05
    released = {}
    t0 = time.monotonic()  # first calls (no cohort): released once arrivals pause for quiet_s
    await asyncio.gather(*(_call(adm, f"new{i}", 0.005 * i, released, t0) for i in range(5)))
    assert max(released.values()) - min(released.values()) < 0.015
    assert min(released.values()) >= 0.02 + 0.02 - 0.005
