"""The inference service: the one place that decides which model work runs next.

Every call into the model (an inline completion, a docstring-action candidate, a slice of a
background explanation, loading a model) is a job on one priority queue, run by one worker
thread: a local runtime decodes one thing at a time anyway, and a remote endpoint is asked one
thing at a time per editor (the server multiplexes editors, not this queue).

Order: by priority (COMPLETION, FUNCTION, WARM, then EXPLAIN), first come first served within a
priority. A job that arrives while a lower-priority *preemptible* job runs sets that job's
cancel flag, so it stops within one decode step; its owner resumes it (explanations keep what
they wrote and ask again). Jobs that are not preemptible (a docstring candidate: restarting it
would throw its work away) finish first; the newcomer waits.

Cancellation is wrapped here, once: `run` awaits the job and, when the awaiting task is
cancelled (`$/cancelRequest`, a newer keystroke), sets the job's cancel flag; a job still in the
queue is dropped without running, one already running stops at its next decode step. A job
whose cancel flag is set before it starts raises `Cancelled` without touching the model.

Plain threads and asyncio: no pygls.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import itertools
import logging
import threading
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Callable

from .model.backend import Cancelled

log = logging.getLogger(__name__)


class Priority(IntEnum):
    LOAD = 0  # loading a model: nothing else can run without one
    COMPLETION = 1  # the user is waiting, keystroke by keystroke
    FUNCTION = 2  # a docstring-action candidate: the user asked, and watches a progress bar
    WARM = 3  # the prompt where the cursor rests, ahead of the first keystroke (features/warm.py)
    EXPLAIN = 4  # background explanations (a hover waiting on one still ranks here)


@dataclass(order=True)
class _Job:
    priority: int
    seq: int
    fn: Callable = field(compare=False)
    args: tuple = field(compare=False)
    cancel: threading.Event | None = field(compare=False)
    preemptible: bool = field(compare=False)
    future: concurrent.futures.Future = field(compare=False)
    name: str = field(compare=False, default="")


class InferenceService:
    """A priority queue feeding one worker thread. `submit` from any thread; `run` from asyncio."""

    def __init__(self, name: str = "tandem-infer"):
        self._cv = threading.Condition()
        self._queue: list[_Job] = []
        self._seq = itertools.count()
        self._running: _Job | None = None
        self._closed = False
        self.preempted = 0  # how many running jobs a higher priority cut short (for tests, logs)
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    # -- submitting ----------------------------------------------------------------------
    def submit(self, priority: Priority, fn: Callable, *args: Any, cancel: threading.Event | None = None,
               preemptible: bool = False, name: str = "") -> concurrent.futures.Future:
        """Queue `fn(*args)`; the future gets its result or exception. `cancel` is the flag the
        job's decode loop checks; with `preemptible`, a higher-priority job arriving while this
        one runs sets it (the job's owner must then be ready to resume)."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        job = _Job(int(priority), next(self._seq), fn, args, cancel, preemptible, fut, name or getattr(fn, "__name__", ""))
        with self._cv:
            if self._closed:
                raise RuntimeError("the inference service is shut down")
            heapq.heappush(self._queue, job)
            r = self._running
            if r is not None and r.preemptible and r.priority > job.priority and r.cancel is not None \
                    and not r.cancel.is_set():
                r.cancel.set()
                self.preempted += 1
                log.debug("%s (priority %d) steps aside for %s", r.name, r.priority, job.name)
            self._cv.notify()
        return fut

    async def run(self, priority: Priority, fn: Callable, *args: Any, cancel: threading.Event | None = None,
                  preemptible: bool = False, name: str = "") -> Any:
        """Await `fn(*args)` run on the inference thread. Cancelling the awaiting task sets
        `cancel` (one is made if none is given) and drops the job if it has not started."""
        cancel = cancel if cancel is not None else threading.Event()
        fut = self.submit(priority, fn, *args, cancel=cancel, preemptible=preemptible, name=name)
        try:
            return await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            cancel.set()  # stops the decode loop, not just the await
            fut.cancel()  # still queued: never runs
            raise

    # -- the worker ------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if not self._queue:
                    return  # closed and drained
                job = heapq.heappop(self._queue)
                if not job.future.set_running_or_notify_cancel():
                    continue  # cancelled while queued
                self._running = job
            try:
                if job.cancel is not None and job.cancel.is_set():
                    raise Cancelled()  # went stale in the queue: the model is not touched
                result = job.fn(*job.args)
            except BaseException as e:  # noqa: BLE001 - handed to the awaiting side
                with self._cv:
                    self._running = None
                job.future.set_exception(e)
            else:
                with self._cv:
                    self._running = None
                job.future.set_result(result)

    # -- introspection and shutdown --------------------------------------------------------
    def pending(self) -> int:
        with self._cv:
            return len(self._queue)

    def running(self) -> str | None:
        with self._cv:
            return self._running.name if self._running else None

    def shutdown(self, wait: bool = True, cancel_pending: bool = True) -> None:
        with self._cv:
            self._closed = True
            if cancel_pending:
                for job in self._queue:
                    if job.cancel is not None:
                        job.cancel.set()
                    job.future.cancel()
                self._queue.clear()
            if self._running is not None and self._running.cancel is not None and cancel_pending:
                self._running.cancel.set()
            self._cv.notify_all()
        if wait and threading.current_thread() is not self._thread:
            self._thread.join(timeout=30)
