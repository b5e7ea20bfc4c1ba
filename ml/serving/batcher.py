"""Micro-batching: concurrent requests share one predict call.

scikit-learn's per-call overhead dominates single-row prediction (a HistGradientBoosting
predict costs about the same for 1 row as for 64), so the rows of concurrent requests go
into one predict, up to ``max_batch`` rows. A batch goes as soon as the requests it expects
are in: as many as the previous batch held (one fewer each time fewer came), and any request
whose body is still being read. ``max_wait`` only caps that wait. So a request alone goes at
once, and under load each batch gathers what arrived during the previous predict. (The
earlier fixed wait for company held every batch for its timer, even when every request that
was coming was in: 6,200 against 11,500 req/s at 8 connections, docs/architecture.md.) The
wait is timed with ``time.perf_counter``: the event loop's clock and timers count whole
milliseconds. Each request carries the model it was validated against; a batch never mixes
models, so requests in flight during a hot swap finish on the old model.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from ml.serving.inputs import combine
from ml.serving.model import LoadedModel, ModelFailure

# a batch of a model whose compiled trees are quick (``LoadedModel.inline_predict``) up to this many rows
# is predicted on the event loop (at ~0.5 us a row, 256 rows hold the loop ~0.15 ms); a larger one, or
# any other model, in the predict thread, where a slow model cannot stall the server
INLINE_ROWS = 256


def _limit_native_threads(n: int) -> None:
    """OpenMP/BLAS threads spin after each parallel region and starve the event loop; a
    single-row predict gains nothing from them (1,420 -> 2,600 req/s on 2 cores). OpenMP's
    thread count is per calling thread, so this runs in the predict thread itself."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n)


def _inline(model: LoadedModel, proba: bool, rows: int) -> bool:
    """Predicted on the event loop: labels of a model whose compiled trees are quick, few rows."""
    return not proba and rows <= INLINE_ROWS and getattr(model, "inline_predict", False)


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


def _expire(future: asyncio.Future, seconds: float) -> None:
    if not future.done():
        future.set_exception(TimeoutError(f"no prediction within {seconds} s"))


class MicroBatcher:
    """Requests append to a list and wake the batching task through one future; a loop timer per
    request bounds its wait. (An ``asyncio.Queue`` read under ``asyncio.wait_for`` and an
    ``asyncio.timeout`` per request cost 15 % of the throughput at 8 connections.)"""

    def __init__(self, max_batch: int, max_wait: float, on_batch=None, predict_threads: int = 1,
                 batch_timeout: float | None = None, on_failure=None):
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.on_batch = on_batch or (lambda rows: None)
        self.on_failure = on_failure or (lambda reason: None)
        # a predict call over this fails its batch, and the next batch gets a fresh predict thread
        self.batch_timeout = batch_timeout
        self.predict_threads = predict_threads
        self._pending: list[tuple[LoadedModel, object, asyncio.Future, bool]] = []
        self._pending_rows = 0
        self._coming = 0
        self._expected = 1
        self._wakeup: asyncio.Future | None = None
        self._executor = self._new_executor()
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _new_executor(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict",
                                  initializer=_limit_native_threads, initargs=(self.predict_threads,))

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        self._executor.shutdown(wait=False)

    def coming(self) -> None:
        """A request is on its way to ``predict`` (reading its body, parsing it): the batch being
        collected waits for it, up to ``max_wait``. Each call is followed by one ``came()``."""
        self._coming += 1

    def came(self) -> None:
        """That request called ``predict`` next, or was refused: the batch waits for it no more."""
        self._coming -= 1
        if not self._coming and self._wakeup is not None:
            _wake(self._wakeup)

    async def predict(self, model: LoadedModel, matrix, timeout: float | None = None, proba: bool = False) -> list:
        """The predictions for ``matrix``'s rows (with ``proba``: (label, probabilities) per row);
        TimeoutError when they take over ``timeout`` s (waiting for the batch included)."""
        if not self._pending and _inline(model, proba, matrix.shape[0]):
            # no batch being gathered and a quick model: predicted here and now, without a future,
            # a timer and two turns of the loop (~20 us, as much as the walk of the trees)
            self.on_batch(matrix.shape[0])
            try:
                return model.predict(matrix)
            except Exception as exc:
                self.on_failure(getattr(exc, "reason", "raised"))
                raise
        loop = self._loop
        future = loop.create_future()
        self._pending.append((model, matrix, future, proba))
        self._pending_rows += matrix.shape[0]
        if self._wakeup is not None:
            _wake(self._wakeup)
        if timeout is None:
            return await future
        timer = loop.call_later(timeout, _expire, future, timeout)
        try:
            return await future
        finally:
            timer.cancel()

    async def _wait(self, seconds: float | None) -> None:
        """Until a request arrives, or ``seconds`` pass."""
        self._wakeup = woken = self._loop.create_future()
        if seconds is None:
            timer = None
        elif seconds < 0.001:  # the loop's timers count whole milliseconds: look again next iteration
            timer = self._loop.call_soon(_wake, woken)
        else:
            timer = self._loop.call_later(seconds, _wake, woken)
        try:
            await woken
        finally:
            self._wakeup = None
            if timer is not None:
                timer.cancel()

    def _take(self) -> list:
        """The oldest pending requests, up to the first that reaches ``max_batch`` rows."""
        rows = 0
        for n, (_, matrix, _, _) in enumerate(self._pending, 1):
            rows += matrix.shape[0]
            if rows >= self.max_batch:
                break
        items, self._pending = self._pending[:n], self._pending[n:]
        self._pending_rows -= rows
        return items

    async def _run(self) -> None:
        loop, clock = self._loop, time.perf_counter
        while True:
            if not self._pending:
                await self._wait(None)
                continue
            deadline = clock() + self.max_wait
            while self._pending_rows < self.max_batch and (self._coming or len(self._pending) < self._expected):
                remaining = deadline - clock()
                if remaining <= 0:
                    break
                await self._wait(remaining)
            items = self._take()
            self._expected = max(len(items), self._expected - 1)
            kinds: list = []  # (model by identity, proba), in order: a batch never mixes models
            for model, _, _, proba in items:
                if not any(model is m and proba == p for m, p in kinds):
                    kinds.append((model, proba))
            for model, proba in kinds:
                await self._predict_group(loop, model, proba, items if len(kinds) == 1 else
                                          [i for i in items if i[0] is model and i[3] == proba])

    async def _predict_group(self, loop, model: LoadedModel, proba: bool, group: list) -> None:
        payload = combine([g[1] for g in group])
        self.on_batch(payload.shape[0])
        try:
            if _inline(model, proba, payload.shape[0]):
                # the compiled trees walk a few rows in ~25 us, less than the hop to the predict
                # thread and back (~100 us): on the loop itself (docs/open-inference.md)
                predictions = model.predict(payload)
            else:
                predictions = await self._in_thread(loop, model, proba, payload)
        except Exception as exc:  # a model error fails these requests, not the server
            self.on_failure(getattr(exc, "reason", "raised"))
            for _, _, future, _ in group:
                if not future.done():
                    future.set_exception(exc)
            return
        self._answer(group, predictions)

    async def _in_thread(self, loop, model: LoadedModel, proba: bool, payload) -> list:
        # One predict thread: the event loop keeps accepting requests, which queue up for the
        # next batch (measured faster than predicting on the loop, see docs/architecture.md).
        running = loop.run_in_executor(self._executor, model.predict_with_proba if proba else model.predict, payload)
        if self.batch_timeout is None:
            return await running
        try:
            return await asyncio.wait_for(running, self.batch_timeout)
        except asyncio.TimeoutError:
            # the stuck call keeps its thread until it returns (Python cannot stop a thread);
            # its answer goes nowhere, and the next batch runs on a new thread
            self._executor.shutdown(wait=False)
            self._executor = self._new_executor()
            raise ModelFailure(f"{getattr(model, 'label', 'the model')} took longer than "
                               f"{self.batch_timeout:g} s to predict {payload.shape[0]} rows",
                               "timeout", 504) from None

    @staticmethod
    def _answer(group: list, predictions: list) -> None:
        start = 0
        for _, rows, future, _ in group:
            end = start + rows.shape[0]
            if not future.done():
                future.set_result(predictions[start:end])
            start = end
