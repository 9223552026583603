"""Every operator of the zoo (tests/operator_zoo.py) through medrecon.testing.check_operator."""

import inspect

import pytest
import torch
from operator_zoo import ZOO, matrix_cache  # noqa: F401 - matrix_cache is an autouse fixture

import medrecon.operators
from medrecon.operators import LinearOperator, MatrixOperator, OperatorInputError
from medrecon.testing import check_operator

CASES = [
    pytest.param(name, marks=[pytest.mark.gpu] if case.gpu else [], id=name) for name, case in ZOO.items()
]


@pytest.mark.parametrize("name", CASES)
def test_operator_properties(name, rng):
    case = ZOO[name]
    errors = check_operator(case.make(rng), rtol=case.rtol, backward=case.backward)
    assert {"adjoint", "adjoint_of_adjoint", "linearity", "dtype", "deepcopy", "support"} <= set(errors)


def test_every_public_operator_is_in_the_zoo():
    public = {
        obj
        for obj in vars(medrecon.operators).values()
        if inspect.isclass(obj) and issubclass(obj, LinearOperator) and obj is not LinearOperator
    }
    seen: set[type] = set()
    for case in ZOO.values():
        if case.gpu and not torch.cuda.is_available():
            seen |= public & {medrecon.operators.ConeBeamCT}  # constructing it without a GPU raises
            continue
        seen |= {type(m) for m in case.make(torch.Generator().manual_seed(0)).modules()}
    missing = sorted(cls.__name__ for cls in public - seen)
    assert not missing, f"add these operators to tests/operator_zoo.py: {missing}"


# The checker itself must fail on broken operators, each check on its own defect.
class _WrongAdjoint(MatrixOperator):
    def _AH(self, y):
        return 1.01 * super()._AH(y)


class _Affine(MatrixOperator):
    def _A(self, x):
        return super()._A(x) + 1e-3

    def _AH(self, y):
        return super()._AH(y) + 1e-3 * y.sum(-1, keepdim=True).expand(-1, self.in_shape[0])


class _AcceptsAnything(MatrixOperator):
    def _check(self, *args, **kwargs):
        pass


class _NoDtypeMove(MatrixOperator):
    def _apply(self, fn, recurse=True):
        return self


class _WrongBackward(MatrixOperator):
    def forward(self, x):  # right values, a gradient that is not A^H
        y = super().forward(x)
        return y + 1e-2 * (x.pow(2).sum() - x.pow(2).sum().detach())


@pytest.mark.parametrize(
    "broken, check",
    [
        (_WrongAdjoint, "adjoint"),
        (_Affine, "adjoint|linearity"),
        (_AcceptsAnything, "bad input"),
        (_NoDtypeMove, "dtype"),
        (_WrongBackward, "backward"),
    ],
)
def test_check_operator_catches_defects(broken, check, rng):
    op = broken(torch.randn(4, 3, dtype=torch.float64, generator=rng))
    with pytest.raises(AssertionError, match=check):
        check_operator(op, backward=True)


def test_check_operator_on_a_good_operator_reports_errors(rng):
    op = MatrixOperator(torch.randn(4, 3, dtype=torch.float64, generator=rng))
    errors = check_operator(op, backward=True)
    assert max(errors[k] for k in ("adjoint", "adjoint_of_adjoint", "linearity", "deepcopy")) < 1e-14
    assert errors["dtype"] < 1e-6 and errors["norm"] < 1e-3 and "backward" in errors
    with pytest.raises(OperatorInputError):
        MatrixOperator(torch.randn(4, 3, dtype=torch.float64, generator=rng))(torch.zeros(1, 1, 4))
