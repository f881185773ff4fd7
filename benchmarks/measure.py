"""How the benchmarks measure: wall time of one call, best of several, peak RSS growth, and the JSON they write."""

import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def timed_both(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall seconds and CPU seconds of the calling thread for one call of ``fn``. With one torch thread all the
    work runs on the caller, and its CPU time moves far less than wall time with other load on the machine."""
    wall, cpu = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - wall, time.thread_time() - cpu


def best_of(fn: Callable[[], object], repeats: int, *, warm_up: bool = True) -> float:
    """The fastest of ``repeats`` calls, after one untimed call unless ``warm_up`` is off."""
    if warm_up:
        fn()
    return min(timed(fn) for _ in range(repeats))


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_extra_rss(fn: Callable[[], object], every_s: float = 0.001) -> tuple[int, object]:
    """Largest RSS above the starting RSS while ``fn`` runs (sampled every ``every_s`` in a thread), and its result."""
    start = rss_bytes()
    peak = start
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_bytes())
            done.wait(every_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        result = fn()
    finally:
        done.set()
        thread.join()
    return max(peak, rss_bytes()) - start, result


def write_json(path: str | None, results: dict[str, Any]) -> None:
    """The results as JSON at ``path`` when one was asked for (values JSON does not know become strings)."""
    if path:
        with open(path, "w") as out:
            json.dump(results, out, indent=2, default=str)
