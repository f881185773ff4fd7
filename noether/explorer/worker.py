"""The exact weight pass in a background thread: cancellable between chunks, progress readable from any thread.

No UI calls happen here: a page polls :class:`ExactJob` (``fraction``, ``message``, ``state``) and reads ``result``
when it is done. :class:`JobKeeper` keeps one job per scenario key, so a repeated request reuses the running or
finished pass, and a request for another key (an edited layer) stops the running pass and starts afresh.
"""

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Literal

import torch

from noether.explorer.problems import ExplorerError
from noether.explorer.weights import Cancelled, WeightResult

Compute = Callable[[Callable[[float, str], None], threading.Event], WeightResult]
State = Literal["running", "done", "stopped", "failed"]


class ExactJob:
    """One computation in a daemon thread; ``stop()`` sets the event the computation checks between chunks."""

    def __init__(self, key: Hashable, compute: Compute) -> None:
        self.key = key
        self.fraction = 0.0
        self.message = "starting"
        self.result: WeightResult | None = None
        self.error: str | None = None
        self.seconds = 0.0
        self._compute = compute
        self._cancel = threading.Event()
        self._finished = threading.Event()
        self._stopped = False
        # Intra-op threads are set per process in this torch build, but an embedding server may have changed them
        # for its own threads; the pass runs with the count of the thread that asked for it.
        self.threads = torch.get_num_threads()
        self._thread = threading.Thread(target=self._work, name=f"exact-pass-{key}", daemon=True)

    def start(self) -> "ExactJob":
        self._thread.start()
        return self

    def _report(self, fraction: float, message: str) -> None:
        self.fraction, self.message = fraction, message

    def _work(self) -> None:
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        start = time.perf_counter()
        try:
            self.result = self._compute(self._report, self._cancel)
            self.fraction, self.message = 1.0, "done"
        except Cancelled:
            self._stopped = True
            self.message = "stopped"
        except ExplorerError as exc:
            self.error = "; ".join(str(p) for p in exc.problems)
        except Exception as exc:  # the page shows it; a worker thread has nobody else to tell
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.seconds = time.perf_counter() - start
            self._finished.set()

    def stop(self) -> None:
        """Ask the pass to end at the next chunk boundary (``wait`` to be sure it has)."""
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._finished.wait(timeout)

    @property
    def state(self) -> State:
        if not self._finished.is_set():
            return "running"
        if self.result is not None:
            return "done"
        return "stopped" if self._stopped else "failed"


class JobKeeper:
    """Jobs by scenario key: repeated requests share a job; a new key stops the running ones."""

    def __init__(self, keep: int = 4) -> None:
        self._jobs: OrderedDict[Hashable, ExactJob] = OrderedDict()
        self._keep = keep
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> ExactJob | None:
        with self._lock:
            return self._jobs.get(key)

    def submit(self, key: Hashable, compute: Compute) -> ExactJob:
        """The job for ``key``: the kept one unless it was stopped or failed, else a new one (started)."""
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and job.state in ("running", "done"):
                self._jobs.move_to_end(key)
                return job
            for other in self._jobs.values():
                if other.key != key and other.state == "running":
                    other.stop()
            job = ExactJob(key, compute).start()
            self._jobs[key] = job
            while len(self._jobs) > self._keep:
                self._jobs.popitem(last=False)
            return job

    def stop(self, key: Hashable) -> None:
        job = self.get(key)
        if job is not None:
            job.stop()
