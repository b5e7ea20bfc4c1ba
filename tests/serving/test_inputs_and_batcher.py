"""The request parser and the micro-batcher below the HTTP layer: values JSON cannot carry
plainly (NaN, infinities, overflowing literals), CSV that is not UTF-8 or not CSV, and a
model whose predict raises, which fails the requests of that batch and nothing else."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from ml.serving.batcher import MicroBatcher
from ml.models import Feature, FeatureSchema
from ml.serving.inputs import InputError, _number, parse_body

SCHEMA = FeatureSchema([Feature("a", "number", nullable=True), Feature("b", "number")])


def test_nan_is_a_missing_value_only_where_training_saw_one_and_infinity_is_refused():
    assert np.isnan(_number(float("nan"), 0, 0, SCHEMA))  # "a" had missing values in training
    with pytest.raises(InputError, match="row 0, feature 'b'"):
        _number(float("nan"), 0, 1, SCHEMA)
    with pytest.raises(InputError, match=r"row 3, feature 'b': inf is not a finite number"):
        _number(float("inf"), 3, 1, SCHEMA)
    with pytest.raises(InputError, match="body is not valid JSON: number is infinity"):
        parse_body(b'{"instances": [[1.0, 1e999]]}', "application/json", SCHEMA, 10)  # overflows to inf


def test_csv_that_is_not_utf8_or_not_csv_is_a_400_saying_so():
    with pytest.raises(InputError, match="text/csv body is not UTF-8") as raised:
        parse_body("1,2\n3,4\n".encode("utf-16"), "text/csv", SCHEMA, 10)
    assert raised.value.status == 400
    with pytest.raises(InputError, match="text/csv body is not valid CSV"):
        parse_body(b"1," + b"9" * 200_000, "text/csv", SCHEMA, 10)  # a field past csv's size limit
    with pytest.raises(InputError, match=r"CSV row 1 has 3 values; the model expects 2: \['a', 'b'\]"):
        parse_body(b"a,b\n1,2\n3,4,5\n", "text/csv", SCHEMA, 10)
    assert parse_body(b"a,b\n,2\n", "text/csv", SCHEMA, 10).shape == (1, 2)  # header skipped, empty is missing


class Model:
    def __init__(self, fail: bool):
        self.fail = fail

    def predict(self, matrix):
        if self.fail:
            raise ValueError("model exploded")
        return matrix[:, 0] * 10


def test_a_model_error_fails_only_its_own_batch_and_the_batcher_goes_on():
    async def scenario():
        batcher = MicroBatcher(max_batch=8, max_wait=0.01)
        batcher.start()
        try:
            bad, good = Model(fail=True), Model(fail=False)
            rows = np.array([[1.0, 2.0], [3.0, 4.0]])
            outcomes = await asyncio.gather(batcher.predict(bad, rows), batcher.predict(good, rows),
                                            return_exceptions=True)
            after = await batcher.predict(good, rows[:1])
        finally:
            await batcher.stop()
        return outcomes, after

    (failed, served), after = asyncio.run(scenario())
    assert isinstance(failed, ValueError) and "model exploded" in str(failed)
    assert list(served) == [10.0, 30.0] and list(after) == [10.0]


class Recording:
    """A model that records the rows of each predict call and answers each row's first value."""

    def __init__(self):
        self.calls: list[int] = []

    def predict(self, matrix):
        self.calls.append(matrix.shape[0])
        return list(matrix[:, 0])


def batched(scenario, **settings):
    async def main():
        batcher = MicroBatcher(**settings)
        batcher.start()
        try:
            return await scenario(batcher)
        finally:
            await batcher.stop()
    return asyncio.run(main())


def row(value: float, rows: int = 1) -> np.ndarray:
    return np.full((rows, 2), value)


def test_a_request_alone_is_not_held_for_the_maximum_wait():
    model = Recording()

    async def scenario(batcher):
        started = asyncio.get_running_loop().time()
        answer = await batcher.predict(model, row(7.0))
        return answer, asyncio.get_running_loop().time() - started

    answer, seconds = batched(scenario, max_batch=64, max_wait=5.0)
    assert answer == [7.0] and seconds < 2.0  # a fixed wait for company would take the whole 5 s
    assert model.calls == [1]


def test_a_batch_waits_for_requests_still_being_read_and_then_goes_together():
    model = Recording()

    async def scenario(batcher):
        batcher.coming()  # a second request is reading its body
        first = asyncio.ensure_future(batcher.predict(model, row(1.0)))
        await asyncio.sleep(0.05)
        assert not first.done() and model.calls == []  # held for the request being read
        batcher.came()  # as the server does: its predict follows in the same step
        second = await batcher.predict(model, row(2.0))
        return [await first, second]

    answers = batched(scenario, max_batch=64, max_wait=5.0)
    assert answers == [[1.0], [2.0]] and model.calls == [2]


def test_a_request_refused_while_being_read_releases_the_batch():
    model = Recording()

    async def scenario(batcher):
        batcher.coming()
        first = asyncio.ensure_future(batcher.predict(model, row(1.0)))
        await asyncio.sleep(0.05)
        batcher.came()  # e.g. its body did not parse: no predict follows
        return await asyncio.wait_for(first, 2.0)

    assert batched(scenario, max_batch=64, max_wait=5.0) == [1.0] and model.calls == [1]


def test_batches_stop_at_max_batch_rows_and_each_request_gets_its_own_rows():
    model = Recording()

    async def scenario(batcher):
        return await asyncio.gather(*(batcher.predict(model, row(float(i), rows=2)) for i in range(5)))

    answers = batched(scenario, max_batch=4, max_wait=0.05)
    assert answers == [[float(i)] * 2 for i in range(5)]
    assert model.calls == [4, 4, 2]


def test_after_a_batch_of_three_the_next_waits_for_three_then_expects_one_fewer_each_time_fewer_come():
    model = Recording()

    async def scenario(batcher):
        await asyncio.gather(*(batcher.predict(model, row(1.0)) for _ in range(3)))
        loop = asyncio.get_running_loop()
        waits = []
        for _ in range(3):  # load drops to one request at a time
            started = loop.time()
            await batcher.predict(model, row(1.0))
            waits.append(loop.time() - started)
        return waits

    waits = batched(scenario, max_batch=64, max_wait=0.2)
    assert model.calls == [3, 1, 1, 1]
    assert waits[0] >= 0.15 and waits[1] >= 0.15  # expected 3, then 2: each waited for max_wait
    assert waits[2] < 0.1  # expected 1: goes at once


def test_a_request_over_its_timeout_fails_alone_and_the_late_answer_goes_nowhere():
    import threading

    release = threading.Event()

    class Stalled(Recording):
        def predict(self, matrix):
            release.wait(5)
            return super().predict(matrix)

    model = Stalled()

    async def scenario(batcher):
        with pytest.raises(TimeoutError, match="no prediction within 0.05 s"):
            await batcher.predict(model, row(1.0), timeout=0.05)
        release.set()
        return await batcher.predict(model, row(2.0), timeout=5.0)

    assert batched(scenario, max_batch=64, max_wait=0.01) == [2.0]
    assert model.calls == [1, 1]


def test_compiled_trees_predict_a_small_batch_on_the_loop_and_a_large_one_or_probabilities_in_the_thread():
    import threading

    from ml.serving.batcher import INLINE_ROWS

    class Trees(Recording):
        inline_predict = True  # LoadedModel's, when its compiled trees predict exactly as the model, quickly

        def __init__(self):
            super().__init__()
            self.threads: list[str] = []

        def predict(self, matrix):
            self.threads.append(threading.current_thread().name)
            return super().predict(matrix)

        def predict_with_proba(self, matrix):
            self.threads.append(threading.current_thread().name)
            return [(v, [1.0]) for v in super().predict(matrix)]

    model, plain = Trees(), Recording()

    async def scenario(batcher):
        small = await batcher.predict(model, row(1.0, 3))
        large = await batcher.predict(model, row(2.0, INLINE_ROWS + 1))
        proba = await batcher.predict(model, row(3.0), proba=True)
        return small, large[:1], proba

    assert batched(scenario, max_batch=1024, max_wait=0.01) == ([1.0] * 3, [2.0], [(3.0, [1.0])])
    main, pool = model.threads[0], model.threads[1:]
    assert main == threading.main_thread().name  # the event loop's thread: no hop
    assert all(name.startswith("predict") for name in pool) and len(pool) == 2
    assert model.calls == [3, INLINE_ROWS + 1, 1]
