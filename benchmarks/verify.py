"""Measure envs.verify.check against math-verify alone on two rewrite sets built from GSM8K + MATH-500:
the tuning set (``envs.verify.pairs``, the checker's rules were written against it) and the held-out
set (``envs.verify.heldout``, other answer forms, never used to change the checker).

    .venv/bin/python benchmarks/verify.py            # both full sets (about 16k pairs)
    .venv/bin/python benchmarks/verify.py --every 4  # every 4th source problem
    .venv/bin/python benchmarks/verify.py --set heldout

Prints, per set and checker: equivalent rewrites accepted (%), wrong answers accepted (count), the
same per source (GSM8K / MATH-500), then the rewrite rules each checker fails on. "math-verify alone" is math_verify.verify(parse("$ref$"),
parse(response)) with default settings, run in the same worker pool with the same hard timeout.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from envs.verify import DEFAULT_TIMEOUT, check
from envs.verify.heldout import build_heldout
from envs.verify.pairs import build_pairs
from envs.verify.pool import VerifierPool, VerifierTimeout, WorkerCrashed


def math_verify_alone(pool: VerifierPool, reference: str, response: str) -> bool:
    try:
        return bool(pool.call("math_verify_plain", (reference, response), DEFAULT_TIMEOUT))
    except (VerifierTimeout, WorkerCrashed):
        return False


def _line(label: str, pairs, accepted: list[bool]) -> str:
    eq = [a for p, a in zip(pairs, accepted, strict=True) if p.equivalent]
    wrong = [a for p, a in zip(pairs, accepted, strict=True) if not p.equivalent]
    return (
        f"{label:18s} equivalents accepted {sum(eq)}/{len(eq)} = {100 * sum(eq) / max(1, len(eq)):.2f}%   "
        f"wrong accepted {sum(wrong)}/{len(wrong)}"
    )


def report(name: str, pairs, accepted: list[bool], seconds: float) -> None:
    print(f"{_line(name, pairs, accepted)}   ({seconds:.1f} s)")
    for source in sorted({p.source for p in pairs}):
        keep = [i for i, p in enumerate(pairs) if p.source == source]
        print(_line(f"  {source}", [pairs[i] for i in keep], [accepted[i] for i in keep]))
    misses = Counter(p.rule for p, a in zip(pairs, accepted, strict=True) if p.equivalent and not a)
    false_pos = Counter(p.rule for p, a in zip(pairs, accepted, strict=True) if not p.equivalent and a)
    if misses:
        print(f"{'':18s} rejected equivalents by rule: {dict(misses.most_common())}")
    if false_pos:
        print(f"{'':18s} accepted wrong answers by rule: {dict(false_pos.most_common())}")


def measure(set_name: str, pairs, pool: VerifierPool, args: argparse.Namespace) -> None:
    print(
        f"\n== {set_name} set: {len(pairs)} pairs: {sum(p.equivalent for p in pairs)} equivalent, "
        f"{sum(not p.equivalent for p in pairs)} wrong"
    )
    with ThreadPoolExecutor(args.workers) as ex:
        t = time.perf_counter()
        ours = list(ex.map(lambda p: check(p.response, p.reference, pool=pool).correct, pairs))
        report("envs.verify.check", pairs, ours, time.perf_counter() - t)
        t = time.perf_counter()
        alone = list(ex.map(lambda p: math_verify_alone(pool, p.reference, p.response), pairs))
        report("math-verify alone", pairs, alone, time.perf_counter() - t)
    for name, results in (("envs.verify.check", ours), ("math-verify alone", alone)):
        bad = [p for p, a in zip(pairs, results, strict=True) if a != p.equivalent][: args.examples]
        for p in bad:
            print(f"  [{name}] {p.rule}: ref={p.reference!r} response={p.response!r} expected={p.equivalent}")



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=int, default=1, help="keep every k-th source problem")
    parser.add_argument("--workers", type=int, default=2, help="verifier worker processes")
    parser.add_argument("--examples", type=int, default=0, help="print this many failures per checker")
    parser.add_argument("--set", choices=("both", "tuning", "heldout"), default="both", help="which pair set(s)")
    args = parser.parse_args()

    sets = {"tuning": build_pairs, "heldout": build_heldout}
    pool = VerifierPool(args.workers)
    pool.warm()
    try:
        for name, build in sets.items():
            if args.set in ("both", name):
                measure(name, build(every=args.every), pool, args)
    finally:
        pool.close()


if __name__ == "__main__":
    main()
