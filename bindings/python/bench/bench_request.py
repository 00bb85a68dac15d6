#!/usr/bin/env python3
"""The cost of counting one request from Python: `with load.request(): pass`, in ns.

Printed next to a baseline measured in the same run, an empty `with` on a trivial Python
context manager class, so the figure can be judged on the machine it ran on. Each figure is
the best of several rounds (the least disturbed one). Target: under 1 µs per request.

    .venv/bin/python bindings/python/bench/bench_request.py [--count 1000000] [--rounds 7]
"""

import argparse
import timeit

import quaestor


class Nothing:
    """The cheapest context manager a Python class can be."""

    def __enter__(self) -> "Nothing":
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def best_ns(statement: str, names: dict, count: int, rounds: int) -> float:
    """The best time of one execution of `statement`, in ns, over `rounds` rounds of `count`."""
    timer = timeit.Timer(statement, globals=names)
    return min(timer.repeat(repeat=rounds, number=count)) / count * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="executions per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds; the best one counts")
    args = parser.parse_args()

    with quaestor.Reporter() as reporter:
        load = reporter.add_service("Bench", capacity=4)
        request = load.request()
        names = {"Nothing": Nothing, "load": load, "request": request}
        cases = [
            ("empty loop (subtract from the figures below)", "pass"),
            ("baseline: with Nothing(): pass", "with Nothing():\n    pass"),
            ("with load.request(): pass", "with load.request():\n    pass"),
            ("with request: pass  (one Request reused)", "with request:\n    pass"),
            ("load.start_request(); load.end_request()", "load.start_request(); load.end_request()"),
        ]
        print(f"quaestor {quaestor.__version__}: best of {args.rounds} rounds of {args.count} each")
        for label, statement in cases:
            print(f"{best_ns(statement, names, args.count, args.rounds):8.1f} ns  {label}")
        assert load.current_requests == 0


if __name__ == "__main__":
    main()
