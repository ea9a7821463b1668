"""Slicing a volume into planes that contain the thick axis, and back."""

from __future__ import annotations

import numpy as np
import pytest

from mrisr.slices import PAIR_KINDS, from_slice_stack, slicing_axes, to_slice_stack


def test_there_are_six_pair_kinds():
    assert len(PAIR_KINDS) == 6 and len(set(PAIR_KINDS)) == 6
    assert all(thick != cut for thick, cut in PAIR_KINDS)


@pytest.mark.parametrize(("thick_axis", "slice_axis"), PAIR_KINDS)
def test_slices_put_the_thick_axis_in_rows_and_restack_bit_for_bit(rng, thick_axis, slice_axis):
    data = rng.random((5, 6, 7)).astype(np.float32)
    stack = to_slice_stack(data, thick_axis, slice_axis)
    other = 3 - thick_axis - slice_axis
    assert stack.shape == (data.shape[slice_axis], data.shape[thick_axis], data.shape[other])
    index = [slice(None)] * 3
    index[slice_axis] = 2
    plane = data[tuple(index)]
    # The plane's remaining axes in order; rows must be the thick axis.
    expected = plane if thick_axis < other else plane.T
    np.testing.assert_array_equal(stack[2], expected)
    restacked = from_slice_stack(stack, thick_axis, slice_axis)
    assert restacked.tobytes() == data.tobytes()


def test_slicing_axes_are_the_two_others():
    assert slicing_axes(0) == (1, 2)
    assert slicing_axes(1) == (0, 2)
    assert slicing_axes(2) == (0, 1)


def test_same_axis_twice_is_refused(rng):
    with pytest.raises(ValueError, match="two different axes"):
        to_slice_stack(rng.random((2, 2, 2)), 1, 1)
