"""The comparison helper itself: NaN or an unwritten element must never pass."""

import pytest
import torch
from kernel_checks import assert_close, relative_error
from vggspec.compiler.kernels import plan
from vggspec.compiler.kernels.plan import new_tensor


def test_nan_where_reference_is_finite_fails():
    want = torch.ones(3, 4)
    got = want.clone()
    got[1, 2] = float("nan")
    with pytest.raises(AssertionError, match=r"NaN pattern.*\n.*\(1, 2\)"):
        assert_close(got, want, 1e-5, "checker", record=False)


def test_relative_error_over_tolerance_lists_elements():
    want = torch.ones(5)
    got = want.clone()
    got[3] = 1.1
    assert relative_error(got, want) == pytest.approx(0.1, rel=1e-6)
    with pytest.raises(AssertionError, match=r"at \(3,\)"):
        assert_close(got, want, 1e-5, "checker", record=False)


def test_all_zero_reference_uses_absolute_error():
    assert relative_error(torch.tensor([1e-3]), torch.tensor([0.0])) == pytest.approx(1e-3)


def test_outputs_are_poisoned_in_kernel_tests():
    assert plan.FILL_NEW_OUTPUTS is not None and plan.FILL_NEW_OUTPUTS != plan.FILL_NEW_OUTPUTS
    assert torch.isnan(new_tensor((2, 3), torch.float32, "cpu")).all()
