"""Monotone activations commute with max pooling, exactly (docs/MATHS.md)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cnnfilters import ACTIVATIONS, CnnFiltersError, commute, find_counterexample, get_activation
from cnnfilters import reference as ref

NONDECREASING = [n for n, a in ACTIVATIONS.items() if a.monotonicity == "nondecreasing"]
NOT_MONOTONE = [n for n, a in ACTIVATIONS.items() if a.monotonicity == "neither"]


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_declared_monotonicity_holds_on_a_dense_float32_grid(name):
    act = ACTIVATIONS[name]
    grid = np.concatenate([np.linspace(-100, 100, 200_001, dtype=np.float32),
                           np.linspace(-13, -12.4, 100_001, dtype=np.float32)])  # fmt: skip
    grid.sort()
    steps = np.diff(act(grid).astype(np.float64))
    if act.monotonicity == "nondecreasing":
        assert (steps >= 0).all()
    elif act.monotonicity == "nonincreasing":
        assert (steps <= 0).all()
    else:
        assert (steps > 0).any() and (steps < 0).any()


def test_float32_elu_stays_monotone_where_float32_expm1_does_not():
    x = np.linspace(-12.8, -12.6, 50_001, dtype=np.float32)
    assert (np.diff(get_activation("elu")(x)) >= 0).all()


windows = st.tuples(st.integers(1, 3), st.integers(1, 3))
# The cases a swapped axis gets wrong: a tall and a wide input, each window and
# stride with different steps down and across.
_GRID = (np.arange(2 * 7 * 5, dtype=np.float32).reshape(2, 7, 5) * 37 % 23) - 11


@settings(max_examples=150, deadline=None)
@given(
    x=hnp.arrays(np.float32, st.tuples(st.integers(1, 2), st.integers(3, 9), st.integers(3, 9)),
                 elements=st.floats(-50, 50, width=32)),
    name=st.sampled_from(NONDECREASING),
    kernel=windows,
    stride=windows,
)  # fmt: skip
@example(x=_GRID, name="relu", kernel=(3, 1), stride=(1, 2))
@example(x=_GRID.transpose(0, 2, 1).copy(), name="elu", kernel=(1, 3), stride=(2, 1))
def test_nondecreasing_activation_commutes_with_maxpool_on_any_array(x, name, kernel, stride):
    result = commute(x, name, kernel, stride)
    assert result.commutes and result.max_abs == 0 and result.passed
    assert result.counterexample is None


@settings(max_examples=100, deadline=None)
@given(x=hnp.arrays(np.float32, (1, 6, 6), elements=st.floats(-50, 50, width=32)), kernel=windows)
@example(x=_GRID[:1, :6, :5], kernel=(3, 1))
@example(x=_GRID[:1, :5, :5].transpose(0, 2, 1).copy(), kernel=(1, 2))
def test_nonincreasing_activation_turns_max_into_min(x, kernel):
    result = commute(x, "neg", kernel, 1)
    assert result.min_identity_holds and result.passed


@pytest.mark.parametrize("name", [*NOT_MONOTONE, "neg"])
def test_every_non_monotone_activation_has_a_counterexample_the_check_finds(name):
    found = find_counterexample(name)
    assert found is not None
    ((a, b),) = found["values"]
    act = get_activation(name)
    assert a < b and found["act_of_max"] == float(act(np.float32(b)))
    assert found["max_of_act"] > found["act_of_max"]


@pytest.mark.parametrize("name", NONDECREASING)
def test_no_counterexample_exists_for_a_nondecreasing_activation(name):
    assert find_counterexample(name) is None


def test_commute_reports_the_first_differing_window():
    x = np.array([[[-3.0, -0.5, 5.0, 6.0],
                   [-2.0, -1.0, 7.0, 8.0]]], dtype=np.float32)  # fmt: skip
    result = commute(x, "gelu")
    assert result.differing == 1 and not result.commutes
    assert result.passed  # a non-monotone activation may fail to commute
    example = result.counterexample
    assert example["top_left"] == [0, 0] and example["output_index"] == [0, 0]
    assert example["values"] == [[-3.0, -0.5], [-2.0, -1.0]]
    assert example["max_of_act"] > example["act_of_max"]


def test_both_orders_agree_with_a_direct_window_maximum(rng):
    x = rng.standard_normal((2, 9, 10)).astype(np.float32)
    act = get_activation("tanh")
    result = commute(x, act, 3, 2)
    np.testing.assert_array_equal(result.pool_of_act, ref.window_max(act(x), 3, 2))
    np.testing.assert_array_equal(result.act_of_pool, act(ref.window_max(x, 3, 2)))


def test_unknown_activation_lists_the_names():
    with pytest.raises(CnnFiltersError, match="unknown activation 'mish'; choose from relu"):
        get_activation("mish")
    assert get_activation("Leaky-ReLU").name == "leaky_relu"
    assert get_activation("swish").name == "silu"


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activations_in_blocks_equal_one_call_on_the_whole_array(name, dtype, monkeypatch, rng):
    """Activations run a block of values at a time; every one is elementwise, so the
    bits are those of the function on the whole array, infinities and NaN included,
    for a strided input too."""
    from cnnfilters import activations

    act = get_activation(name)
    x = (rng.standard_normal((3, 17, 23)) * 40).astype(dtype)
    x.flat[::13] = np.inf
    x.flat[5::13] = -np.inf
    x.flat[7::13] = np.nan
    x.flat[9::13] = 0.0
    view = x[:, ::2, 1::3]  # not contiguous
    monkeypatch.setattr(activations, "_BLOCK", 10)
    with np.errstate(all="ignore"):
        for values in (x, view):
            whole = act.function(values.astype(np.float64)).astype(dtype)
            blocks = act(values)
            assert blocks.dtype == dtype and blocks.shape == values.shape
            np.testing.assert_array_equal(blocks, whole)


def _fields(result) -> str:
    """A CommuteResult as text: its arrays by their bytes, every NaN made one NaN (a
    NaN's sign bit may differ with the length of the array an activation's SIMD
    loop runs over), its figures and the counterexample's window by their repr
    (where NaN is NaN, as == would not have it)."""
    out = dataclasses.asdict(result)
    for key in ("act_of_pool", "pool_of_act"):
        values = out[key]
        same_nan = np.where(np.isnan(values), values.dtype.type(np.nan), values)
        out[key] = (values.dtype.str, values.shape, same_nan.tobytes())
    return repr(out)


@settings(max_examples=150, deadline=None)
@given(
    x=hnp.arrays(
        st.sampled_from([np.float32, np.float64]),
        st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(3, 11), st.integers(3, 9)),
        elements=st.one_of(st.floats(-60, 60, width=32),
                           st.sampled_from([np.inf, -np.inf, np.nan, 0.0, 3e38, -3e38])),
    ),
    name=st.sampled_from(sorted(ACTIVATIONS)),
    kernel=windows,
    stride=windows,
    batch=st.booleans(),
)  # fmt: skip
@example(x=_GRID[np.newaxis], name="gelu", kernel=(3, 2), stride=(2, 3), batch=True)
@example(x=_GRID[np.newaxis, :, :5, :7], name="neg", kernel=(2, 3), stride=(3, 1), batch=False)
def test_commute_by_strips_of_rows_is_commute_on_the_whole_input(x, name, kernel, stride, batch):
    """sigma(x) is made a strip of pooled rows at a time, from the input rows under
    them; every field of the result, the first counterexample and overflow
    included, is that of one strip over the whole input, for windows side by
    side, apart and overlapping, on (C, H, W) and (N, C, H, W)."""
    from cnnfilters import ops

    x = x if batch else x[0]
    assume(kernel[0] <= x.shape[-2] and kernel[1] <= x.shape[-1])
    with np.errstate(all="ignore"), pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(ops, "_COMMUTE_STRIP_BYTES", 1 << 40)
        whole = commute(x, name, kernel, stride)
        monkeypatch.setattr(ops, "_COMMUTE_STRIP_BYTES", 1)  # one pooled row a strip
        strips = commute(x, name, kernel, stride)
        expected = ref.window_max(get_activation(name)(x), kernel, stride)
    assert _fields(strips) == _fields(whole)
    np.testing.assert_array_equal(strips.pool_of_act, expected)


def test_commute_holds_one_strip_of_the_activated_input_not_all_of_it():
    """The activated input, the size of the input, was the largest array; now a
    strip of it at a time (12 MP of gradients: 94 MB at the peak from 206 MB,
    117 MB from 515 MB for a nonincreasing activation, and faster)."""
    import tracemalloc

    x = np.random.default_rng(5).standard_normal((2, 2048, 2048)).astype(np.float32)
    for name in ("relu", "neg", "gelu"):
        tracemalloc.start()
        try:
            commute(x, name)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        # The pooled input and the two orders (a quarter of the input each), their
        # masks, and a strip (measured: 1.08x the input, 1.33x for neg; the whole
        # activated input made it 2.06x, and 4.4x to 5.6x for neg).
        assert peak < 1.5 * x.nbytes, (name, peak / x.nbytes)


@pytest.mark.parametrize("name", [*NOT_MONOTONE, "neg"])
def test_a_counterexample_is_a_window_where_the_two_orders_differ(name):
    """sigma(max(a, b)) = sigma(b) is below max(sigma(a), sigma(b)) = sigma(a)."""
    found = find_counterexample(name)
    act = get_activation(name)
    ((a, b),) = found["values"]
    assert found["activated"] == [[float(act(np.float32(a))), float(act(np.float32(b)))]]
    assert found["max_of_act"] == float(act(np.float32(a))) > found["act_of_max"]


@pytest.mark.parametrize("name", NONDECREASING)
def test_a_nondecreasing_activation_has_no_counterexample(name):
    assert find_counterexample(name) is None


def test_the_result_names_its_activation_the_windows_and_the_channel():
    x = np.ones((2, 4, 6), dtype=np.float32)
    x[1, 2:4, 3:6] = [[1, 2, 3], [4, 5, 6]]  # one window of channel 1 differs
    result = commute(x, "neg", kernel_size=(2, 3))
    assert result.activation == "neg" and result.monotonicity == "nonincreasing"
    assert result.kernel_size == (2, 3) and result.stride == (2, 3)
    assert result.total == 2 * 2 * 2 and result.differing == 1
    example = result.counterexample
    assert example["channel"] == 1 and example["top_left"] == [2, 3]
    assert example["activated"] == [[-1, -2, -3], [-4, -5, -6]]


@pytest.mark.parametrize("name", [*NOT_MONOTONE, "neg"])
def test_the_counterexample_has_the_largest_gap_on_its_grid(name):
    """Against every pair a < b of a grid of 257 values, by brute force."""
    act = get_activation(name)
    grid = np.linspace(-8.0, 8.0, 257, dtype=np.float32)
    values = act(grid).astype(np.float64)
    gaps = values[:, None] - values[None, :]  # sigma(a) - sigma(b) for a = grid[i], b = grid[j]
    gaps[np.tril_indices(257)] = -np.inf  # only a < b
    found = find_counterexample(name, steps=257)
    ((a, b),) = found["values"]
    assert a < b and found["max_of_act"] - found["act_of_max"] == gaps.max()
    assert b == grid[np.argmax(gaps.max(axis=0))]


@pytest.mark.parametrize("name", ["gelu", "square", "neg"])
def test_the_largest_gap_is_the_largest_difference_of_the_two_orders(name):
    """max_abs against a direct max |sigma(maxpool(x)) - maxpool(sigma(x))|, with the
    largest difference in the very first window and the input over several blocks."""
    from cnnfilters import ops

    rng = np.random.default_rng(7)
    # Positive values, where gelu and square increase: they commute there; the one
    # window of negatives, the first, holds their only gap.
    x = rng.uniform(0.5, 1.5, (2, 300, 240)).astype(np.float32)
    x[0, :2, :2] = [[-3.0, -0.5], [-2.5, -3.5]]
    result = ops.commute(x, get_activation(name), 2)
    gaps = np.abs(result.act_of_pool.astype(np.float64) - result.pool_of_act)
    assert result.max_abs == float(gaps.max())
    assert result.differing == int(np.count_nonzero(gaps))


def _two_drops(x: np.ndarray) -> np.ndarray:
    """Rises to 1 before -2, drops to -10 (its minimum), rises to 50 before 4, drops
    to 20: the largest gap is at 4, after the highest value, not at the minimum."""
    return np.where(x < -2, x + 3, np.where(x < 4, -10 + 10 * (x + 2), 20.0))


def test_the_counterexample_is_the_largest_gap_not_the_lowest_value():
    act = ACTIVATIONS["gelu"]
    act = dataclasses.replace(act, name="two-drops", function=_two_drops, smooth=False)
    found = find_counterexample(act)
    # The default grid steps by 1/256, so both ends are on it.
    assert found["values"] == [[4 - 1 / 256, 4.0]]
    assert found["activated"] == [[50 - 10 / 256, 20.0]]
    assert found["channel"] == 0 and found["top_left"] == [0, 0]


def test_integer_input_is_compared_in_float32():
    x = np.array([[[0, 200, 3, 255], [7, 1, 9, 2]]], dtype=np.uint8)
    result = commute(x, "relu")
    assert result.act_of_pool.dtype == result.pool_of_act.dtype == np.float32
    assert result.act_of_pool.tolist() == [[[200.0, 255.0]]] and result.commutes


def test_the_min_identity_is_checked_for_a_nonincreasing_activation_only():
    x = np.arange(8, dtype=np.float32).reshape(1, 2, 4)
    assert commute(x, "relu").min_identity_holds is None
    assert commute(x, "gelu").min_identity_holds is None
    assert commute(x, "neg").min_identity_holds is True


def test_nan_on_one_side_only_is_a_difference():
    # An activation of one's own that is NaN below 0: the max of the activations of
    # [-1, 4] is NaN, the activation of the max, sqrt(4), is not.
    sqrt = dataclasses.replace(ACTIVATIONS["relu"], name="sqrt", function=np.sqrt)
    x = np.array([[[-1.0, 4.0]]], dtype=np.float32)
    result = commute(x, sqrt, kernel_size=(1, 2))
    assert np.isnan(result.pool_of_act).all() and not np.isnan(result.act_of_pool).any()
    assert result.differing == 1


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"kernel_size": 0}, "kernel_size must be positive, got 0"),
        ({"kernel_size": 2, "stride": (1, 0)}, "stride must be positive, got (1, 0)"),
    ],
)
def test_commute_names_the_option_it_refuses(options, words):
    with pytest.raises(CnnFiltersError) as raised:
        commute(np.zeros((1, 4, 4), dtype=np.float32), "relu", **options)
    assert str(raised.value) == words


def test_the_largest_gap_is_measured_in_float64():
    # 4097**2 = 16785409 is 16785408 in float32; its gap to 1 is 16785407, which
    # float32 would round back to 16785408.
    result = commute(np.array([[[-4097.0, 1.0]]], dtype=np.float32), "square", (1, 2))
    assert result.max_abs == 16785407.0
