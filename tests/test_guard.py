"""The trainer's NaN guard `engine.trainer.FiniteGuard`: the finiteness check of the gradients (NaN, +inf, -inf
in any one element of any one parameter; parameters without a gradient skipped) and the keep / restore of
the parameters (exact, in place, gradients left alone).
"""

from __future__ import annotations

import math

import pytest
import torch

from engine.trainer import FiniteGuard


def _params() -> list[torch.nn.Parameter]:
    """Three parameters of different shapes and dtypes, with deterministic values."""
    gen = torch.Generator().manual_seed(0)
    shapes = [((4, 3), torch.float32), ((5,), torch.float32), ((2, 2, 2), torch.float64)]
    return [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dt)) for s, dt in shapes]


def _set_finite_grads(params: list[torch.nn.Parameter], seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = 1e3 * torch.randn(p.shape, generator=gen, dtype=p.dtype)


def test_finite_gradients_pass_and_are_left_unchanged():
    params = _params()
    _set_finite_grads(params)
    before = [p.grad.clone() for p in params]
    guard = FiniteGuard(params)
    assert guard.gradients_finite() is True
    assert guard.gradients_finite() is True  # repeatable
    for p, g in zip(params, before, strict=True):
        assert torch.equal(p.grad, g)  # the check unscales by exactly 1
    # large but finite values are finite
    params[2].grad[1, 0, 1] = torch.finfo(torch.float64).max
    params[0].grad[0, 0] = -torch.finfo(torch.float32).max
    assert guard.gradients_finite() is True


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize(("which", "index"), [(0, (0, 0)), (0, (3, 2)), (1, (4,)), (2, (1, 0, 1))])
def test_one_non_finite_element_fails_the_check(bad, which, index):
    params = _params()
    _set_finite_grads(params)
    guard = FiniteGuard(params)
    assert guard.gradients_finite() is True
    params[which].grad[index] = bad
    assert guard.gradients_finite() is False
    assert guard.gradients_finite() is False  # still there: the same answer
    # the flag is reset on each check: once the gradient is finite again, the check passes again
    params[which].grad[index] = 0.5
    assert guard.gradients_finite() is True


def test_parameters_without_a_gradient_are_skipped():
    params = _params()
    guard = FiniteGuard(params)
    assert all(p.grad is None for p in params)
    assert guard.gradients_finite() is True  # no gradients at all
    _set_finite_grads(params)
    params[1].grad = None
    assert guard.gradients_finite() is True
    assert params[1].grad is None  # not created by the check
    params[2].grad[0, 1, 0] = math.nan  # a non-finite value beside a skipped parameter is still found
    assert guard.gradients_finite() is False
    params[0].grad, params[2].grad = None, None
    assert guard.gradients_finite() is True
    params[1].grad = torch.full((5,), math.inf)
    assert guard.gradients_finite() is False


def test_an_empty_parameter_list_passes():
    assert FiniteGuard([]).gradients_finite() is True


def test_restore_gives_back_the_kept_values_exactly_and_leaves_gradients_alone():
    params = _params()
    guard = FiniteGuard(params)
    # values with many significant bits: a rounding copy would show
    with torch.no_grad():
        for i, p in enumerate(params):
            p.copy_(torch.arange(p.numel(), dtype=p.dtype).reshape(p.shape) * (math.pi + i) + 1 / 3)
    guard.keep()
    kept = [p.detach().clone() for p in params]
    ids = [id(p) for p in params]
    _set_finite_grads(params, seed=2)
    grads = [p.grad.clone() for p in params]
    grad_objects = [p.grad for p in params]
    with torch.no_grad():  # what an optimiser step that went wrong leaves
        params[0].add_(1.0)
        params[1].mul_(-3.0)
        params[2][0, 0, 0] = math.nan
        params[2][1, 1, 1] = math.inf
    assert not any(torch.equal(p, k) for p, k in zip(params, kept, strict=True))
    guard.restore()
    for p, k, g, go in zip(params, kept, grads, grad_objects, strict=True):
        assert torch.equal(p.detach(), k)  # exact, element by element
        assert p.dtype == k.dtype
        assert torch.equal(p.grad, g) and p.grad is go  # the gradients are not touched
    assert [id(p) for p in params] == ids  # in place: an optimiser still holds these parameters
    assert all(p.requires_grad for p in params)


def test_restore_gives_the_last_kept_values_not_the_first():
    params = _params()
    guard = FiniteGuard(params)
    initial = [p.detach().clone() for p in params]
    guard.restore()  # before any keep(): the values at construction
    for p, k in zip(params, initial, strict=True):
        assert torch.equal(p.detach(), k)
    with torch.no_grad():
        for p in params:
            p.mul_(2.0).add_(0.25)
    second = [p.detach().clone() for p in params]
    guard.keep()
    with torch.no_grad():
        for p in params:
            p.zero_()
    params[0].grad = None  # no gradient: restore still restores the values
    guard.restore()
    for p, s, i in zip(params, second, initial, strict=True):
        assert torch.equal(p.detach(), s) and not torch.equal(p.detach(), i)
    assert params[0].grad is None
    # the kept copy is a copy: changing the parameters after keep() does not change what restore() gives
    guard.keep()
    with torch.no_grad():
        params[1].fill_(7.0)
    guard.restore()
    assert torch.equal(params[1].detach(), second[1])
