"""Shared settings of the kernel tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are tiny: a second thread costs more than it saves (far more when the
    machine is busy, as OpenMP threads then wait for each other on every small op)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
