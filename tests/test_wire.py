"""Probe arguments survive the trip through JSON, `torch.dtype` arguments included."""

from __future__ import annotations

import json

import pytest
import torch

from course.wire import dump_value, load_value


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_a_dtype_argument_travels_by_name(dtype):
    sent = {"dtype": dtype, "theta": 500000.0, "args": (torch.arange(3), 8)}
    received = load_value(json.loads(json.dumps(dump_value(sent))))
    assert received["dtype"] is dtype
    assert received["theta"] == 500000.0 and torch.equal(received["args"][0], torch.arange(3))


def test_an_unknown_dtype_name_is_refused():
    with pytest.raises(ValueError, match="malformed dtype"):
        load_value({"torch_dtype": "os.system"})
