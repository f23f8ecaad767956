"""The inference service (tandem/inference.py) with real threads: priority order, preemption of
resumable work only, cancellation of queued and running jobs. Every wait has a timeout."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from tandem.inference import InferenceService, Priority
from tandem.model.backend import Cancelled

T = 5.0  # seconds: the bound on every wait (the jobs themselves take milliseconds)


@pytest.fixture
def service():
    s = InferenceService(name="test-infer")
    yield s
    s.shutdown(wait=True)


def gate_job(service: InferenceService) -> tuple[threading.Event, threading.Event]:
    """Occupy the worker until `release` is set; `started` tells it is running."""
    started, release = threading.Event(), threading.Event()

    def hold():
        started.set()
        assert release.wait(T)

    service.submit(Priority.LOAD, hold, name="gate")
    assert started.wait(T)
    return started, release


def decoding(cancel: threading.Event, steps: int, log: list, name: str, step_s: float = 0.01):
    """A stand-in for a decode loop: checks the flag before every step, as backend.decode_loop does."""
    done = 0
    for _ in range(steps):
        if cancel.is_set():
            log.append((name, "cancelled", done))
            raise Cancelled(done)
        time.sleep(step_s)
        done += 1
    log.append((name, "done", done))
    return done


def test_queued_jobs_run_by_priority_then_arrival(service):
    order: list[str] = []
    _, release = gate_job(service)
    futures = [service.submit(p, order.append, name, name=name) for p, name in [
        (Priority.EXPLAIN, "explain-1"), (Priority.FUNCTION, "function-1"), (Priority.COMPLETION, "completion-1"),
        (Priority.WARM, "warm-1"), (Priority.EXPLAIN, "explain-2"), (Priority.COMPLETION, "completion-2"),
        (Priority.FUNCTION, "function-2")]]
    assert service.pending() == 7
    release.set()
    for f in futures:
        f.result(timeout=T)
    # A warm (the prompt where the cursor rests) goes after what the user asked for, before
    # background explanations.
    assert order == ["completion-1", "completion-2", "function-1", "function-2", "warm-1", "explain-1", "explain-2"]


def test_a_completion_preempts_a_running_explanation_which_can_resume(service):
    log: list = []
    explain_cancel = threading.Event()
    explanation = service.submit(Priority.EXPLAIN, decoding, explain_cancel, 500, log, "explain",
                                 cancel=explain_cancel, preemptible=True, name="explain")
    deadline = time.monotonic() + T
    while service.running() != "explain" and time.monotonic() < deadline:
        time.sleep(0.005)
    assert service.running() == "explain"
    t0 = time.perf_counter()
    completion = service.submit(Priority.COMPLETION, decoding, threading.Event(), 3, log, "completion",
                                cancel=threading.Event(), name="completion")
    assert completion.result(timeout=T) == 3
    waited = time.perf_counter() - t0
    with pytest.raises(Cancelled):
        explanation.result(timeout=T)
    assert log[0][:2] == ("explain", "cancelled") and log[1] == ("completion", "done", 3)
    assert waited < 1.0, waited  # one decode step of the explanation, not its 5 s
    assert service.preempted == 1
    # The owner resumes with a fresh flag: it runs to the end once nothing more urgent waits.
    resumed = threading.Event()
    assert service.submit(Priority.EXPLAIN, decoding, resumed, 5, log, "explain", cancel=resumed,
                          preemptible=True).result(timeout=T) == 5


def test_a_docstring_candidate_is_not_preempted_the_completion_waits(service):
    log: list = []
    fn_cancel = threading.Event()
    candidate = service.submit(Priority.FUNCTION, decoding, fn_cancel, 20, log, "function",
                               cancel=fn_cancel, preemptible=False, name="function")
    deadline = time.monotonic() + T
    while service.running() != "function" and time.monotonic() < deadline:
        time.sleep(0.005)
    completion = service.submit(Priority.COMPLETION, decoding, threading.Event(), 2, log, "completion",
                                name="completion")
    assert completion.result(timeout=T) == 2
    assert candidate.result(timeout=T) == 20
    assert not fn_cancel.is_set()
    assert log == [("function", "done", 20), ("completion", "done", 2)]
    assert service.preempted == 0


def test_lower_priority_arrivals_do_not_preempt(service):
    log: list = []
    c = threading.Event()
    first = service.submit(Priority.FUNCTION, decoding, c, 10, log, "function", cancel=c, preemptible=True)
    deadline = time.monotonic() + T
    while service.running() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    service.submit(Priority.EXPLAIN, log.append, ("explain", "done", 0)).result(timeout=T)
    assert first.result(timeout=T) == 10 and not c.is_set()
    assert log[0] == ("function", "done", 10)


def test_a_job_cancelled_while_queued_never_touches_the_model(service):
    calls: list = []
    _, release = gate_job(service)
    stale = threading.Event()
    fut = service.submit(Priority.COMPLETION, calls.append, "stale", cancel=stale)
    stale.set()  # the user typed on before it started
    release.set()
    with pytest.raises(Cancelled):
        fut.result(timeout=T)
    assert calls == []


def test_errors_reach_the_caller_and_the_worker_goes_on(service):
    def boom():
        raise ValueError("bad")

    with pytest.raises(ValueError):
        service.submit(Priority.COMPLETION, boom).result(timeout=T)
    assert service.submit(Priority.COMPLETION, lambda: 42).result(timeout=T) == 42


async def test_cancelling_the_awaiting_task_stops_a_running_job(service):
    log: list = []
    cancel = threading.Event()
    task = asyncio.ensure_future(service.run(Priority.COMPLETION, decoding, cancel, 1000, log, "completion",
                                             cancel=cancel, name="completion"))
    deadline = time.monotonic() + T
    while service.running() != "completion" and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    task.cancel()  # $/cancelRequest
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, T)
    assert cancel.is_set()
    # The worker is free again within a step: the next job runs at once.
    t0 = time.perf_counter()
    assert await asyncio.wait_for(service.run(Priority.COMPLETION, lambda: "next"), T) == "next"
    assert time.perf_counter() - t0 < 1.0
    assert log and log[0][:2] == ("completion", "cancelled")


async def test_cancelling_a_queued_awaiter_drops_its_job(service):
    calls: list = []
    _, release = gate_job(service)
    task = asyncio.ensure_future(service.run(Priority.EXPLAIN, calls.append, "never"))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, T)
    release.set()
    assert await asyncio.wait_for(service.run(Priority.EXPLAIN, calls.append, "later"), T) is None
    assert calls == ["later"]


def test_many_threads_submitting_lose_nothing(service):
    results: list[int] = []
    lock = threading.Lock()

    def add(i):
        with lock:
            results.append(i)
        return i

    futs: list = []

    def client(k):
        for i in range(50):
            futs.append(service.submit(Priority(1 + (i % 3)), add, k * 100 + i))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(T)
    assert sorted(f.result(timeout=T) for f in list(futs)) == sorted(results)
    assert len(results) == 200


async def test_an_explanation_on_the_service_steps_aside_for_a_completion_and_resumes():
    """The explainer (provenance/explain.py) on the real service: a completion submitted while a
    foreground explanation decodes runs within a step, and the explanation still ends complete
    and identical to one written without interruption."""
    from tandem.provenance.explain import Explainer
    from tests.unit.test_provenance_explain import REQ, FakeLM, FakeModel, fixed, words

    service = InferenceService()
    try:
        lm = FakeLM(40, step_s=0.02)
        ex = Explainer(fixed(FakeModel(lm)), service, idle_s=0, slice_tokens=40)
        job = ex.explain("k", REQ, background=False)
        waiter = asyncio.ensure_future(ex.wait(job, T))
        deadline = time.monotonic() + T
        while service.running() != "explain" and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.1)  # a few tokens in
        t0 = time.perf_counter()
        assert await asyncio.wait_for(service.run(Priority.COMPLETION, lambda: "done", name="completion"), T) == "done"
        assert time.perf_counter() - t0 < 0.5  # a step or two, not the rest of the explanation
        result = await asyncio.wait_for(waiter, T)
        assert result.text == words(40)
        assert lm.cancelled == 1 and service.preempted == 1 and not lm.overlap
    finally:
        service.shutdown()
