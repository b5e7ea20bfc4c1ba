"""The request parser and the micro-batcher below the HTTP layer: values JSON cannot carry
plainly (NaN, infinities, overflowing literals), CSV that is not UTF-8 or not CSV, and a
model whose predict raises, which fails the requests of that batch and nothing else."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from ml.serving.batcher import MicroBatcher
from ml.serving.inputs import FeatureSchema, InputError, _number, parse_body

SCHEMA = FeatureSchema(["a", "b"], missing_allowed={"a"})


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
