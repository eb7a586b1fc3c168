"""Shared test set-up."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Small tensors on 2 shared cores: torch's intra-op thread pool only adds contention (often 5-20x slower)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


UNPICKLED: list[str] = []


def _record_unpickle() -> str:
    UNPICKLED.append("unpickled")
    return "boom"


class PickleTrap:
    """An object whose unpickling is observable: a loader that unpickles it appends to `UNPICKLED`."""

    def __reduce__(self):
        return (_record_unpickle, ())


@pytest.fixture
def unpickled() -> list[str]:
    """The record of trapped unpickling, emptied for each test (build traps with `PickleTrap()`)."""
    UNPICKLED.clear()
    return UNPICKLED
