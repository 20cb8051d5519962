"""One intra-op thread for the QLoRA tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # These matrices are tiny: a second thread gains nothing, and on a busy shared 2-core machine
    # OpenMP's waiting threads stretched the 30-step training test from 0.5 s to a minute.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
