"""Each construction against its independent reference."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import coordinate_grid
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from cnnfilters import CnnFiltersError, avgpool, compare, conv2d, gradients, grayscale
from cnnfilters import reference as ref
from cnnfilters.kernels import (
    FORWARD_DIFF_X,
    FORWARD_DIFF_Y,
    avg_pool_weight,
    constructions,
    gradient_weight,
    grayscale_weight,
    one_hot_filters,
)


def test_kernels_are_the_construction_matrices_in_torch_layout():
    np.testing.assert_array_equal(FORWARD_DIFF_Y, [[0, 0, 0], [0, -1, 0], [0, 1, 0]])
    np.testing.assert_array_equal(FORWARD_DIFF_X, [[0, 0, 0], [0, -1, 1], [0, 0, 0]])
    assert gradient_weight(1).shape == (2, 1, 3, 3)
    assert gradient_weight(3).shape == (6, 1, 3, 3)
    np.testing.assert_array_equal(
        grayscale_weight("bt601").ravel(), np.float32([0.299, 0.587, 0.114])
    )
    assert grayscale_weight("0.2, 0.3 ,0.5").shape == (1, 3, 1, 1)
    assert avg_pool_weight(3, 2).shape == (3, 1, 2, 2)
    dense = avg_pool_weight(3, 2, depthwise=False)
    assert dense.shape == (3, 3, 2, 2)
    assert dense[0, 1].sum() == 0 and dense[2, 2].sum() == 1


def test_one_hot_filters_sum_to_the_average_filter():
    for k in (1, 2, 3, 4):
        np.testing.assert_allclose(
            one_hot_filters(k).sum(axis=0), avg_pool_weight(1, k)[0], rtol=1e-6
        )


def test_every_construction_records_what_torch_needs():
    """Run by its recorded geometry alone (as torch.nn.Conv2d would be), each
    construction reproduces the operation it stands for."""
    rgb = coordinate_grid(6, 8, channels=3)
    gray = coordinate_grid(6, 8)
    expected = {
        "gradient": np.concatenate(gradients(gray)),
        "grayscale-bt601": grayscale(rgb),
        "grayscale-bt709": grayscale(rgb, "bt709"),
        "avgpool2": avgpool(rgb, 2),
        "avgpool2-onehot": None,  # four partial filters: checked against slicing below
    }
    for name, construction in constructions().items():
        data = construction.to_dict()
        assert data["shape"] == list(construction.weight.shape)
        x = rgb if data["in_channels"] == 3 else gray
        out = conv2d(x, np.array(data["weight"], dtype=np.float32), stride=data["stride"],
                     padding=data["padding"], groups=data["groups"])  # fmt: skip
        assert out.shape[0] == data["out_channels"]
        if expected[name] is not None:
            np.testing.assert_allclose(out, expected[name], rtol=1e-6)
        else:  # delta_uv / 4: each filter picks one pixel of every 2x2 block
            for index, (u, v) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
                np.testing.assert_allclose(out[index], gray[0, u::2, v::2] / 4, rtol=1e-6)


def test_forward_diff_of_vertical_step_is_one_row():
    rows, _ = np.mgrid[0:6, 0:5]
    step = (rows >= 3).astype(np.float32)[None] * 10
    dy, dx = gradients(step)
    assert np.flatnonzero(dy[0, :-1].any(axis=1)).tolist() == [2]  # only the row before the edge
    np.testing.assert_array_equal(dy[0, 2], 10)
    np.testing.assert_array_equal(dx[0, :, :-1], 0)


def test_zero_padding_border_is_minus_the_pixel():
    x = coordinate_grid(4, 5)
    dy, dx = gradients(x)
    np.testing.assert_array_equal(dy[0, -1], -x[0, -1])
    np.testing.assert_array_equal(dx[0, :, -1], -x[0, :, -1])
    dy_rep, dx_rep = gradients(x, padding_mode="replicate")
    np.testing.assert_array_equal(dy_rep[0, -1], 0)
    np.testing.assert_array_equal(dx_rep[0, :, -1], 0)


@pytest.mark.parametrize("mode", ["zeros", "replicate", "reflect", "circular"])
def test_gradients_equal_slicing_differences_exactly(mode, rng):
    x = rng.integers(0, 256, size=(3, 37, 41)).astype(np.float32)
    for actual, expected in zip(gradients(x, mode), ref.forward_differences(x, mode), strict=True):
        check = compare(actual, expected, name="gradient", reference="slicing")
        assert check.passed and check.max_abs == 0 and check.differing == 0


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(2, 12), st.integers(2, 12)),
                  elements=st.floats(-1e4, 1e4, width=32)))  # fmt: skip
def test_gradients_of_any_float32_array_equal_slicing_exactly(x):
    for actual, expected in zip(gradients(x), ref.forward_differences(x), strict=True):
        np.testing.assert_array_equal(actual, expected)


def test_grayscale_is_the_luma_formula(rng):
    rgb = rng.integers(0, 256, size=(3, 20, 30)).astype(np.float32)
    check = compare(grayscale(rgb), ref.luma(rgb, (0.299, 0.587, 0.114)), name="g", reference="f",
                    tolerance=255 * 4 * np.finfo(np.float32).eps)  # fmt: skip
    assert check.passed, check.summary()


def test_grayscale_is_within_one_level_of_pillow_on_a_few_pixels(rng):
    rgb8 = rng.integers(0, 256, size=(256, 256, 3), dtype=np.uint8)
    image = Image.fromarray(rgb8)
    ours = np.floor(grayscale(np.moveaxis(rgb8, -1, 0).astype(np.float32)) + 0.5)
    check = compare(ours, ref.pillow_grayscale(image), name="g", reference="pillow", tolerance=1)
    assert check.passed
    assert check.differing / check.total < 0.01  # 16-bit fixed point vs a float round


def test_grayscale_needs_three_channels():
    with pytest.raises(CnnFiltersError, match="grayscale needs 3 channels"):
        grayscale(np.zeros((4, 2, 2)))
    with pytest.raises(CnnFiltersError, match=r"got 'bt2020'"):
        grayscale(np.zeros((3, 2, 2)), "bt2020")
    with pytest.raises(CnnFiltersError, match=r"got '1,x,3'"):
        grayscale(np.zeros((3, 2, 2)), "1,x,3")


@pytest.mark.parametrize("edge", ["drop", "partial"])
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_avgpool_equals_block_mean(edge, k, rng):
    x = rng.integers(0, 256, size=(3, 23, 18)).astype(np.float32)
    check = compare(avgpool(x, k, edge), ref.block_mean(x, k, edge), name="a", reference="mean",
                    tolerance=1e-4)  # fmt: skip
    assert check.passed, check.summary()


@pytest.mark.parametrize("k", [2, 3, 4])
def test_avgpool_partial_is_within_one_level_of_pillow_reduce(k, rng):
    rgb8 = rng.integers(0, 256, size=(29, 34, 3), dtype=np.uint8)
    ours = np.floor(avgpool(np.moveaxis(rgb8, -1, 0).astype(np.float32), k, "partial") + 0.5)
    check = compare(ours, ref.pillow_reduce(Image.fromarray(rgb8), k), name="a", reference="pil",
                    tolerance=1)  # fmt: skip
    assert check.passed, check.summary()


def test_avgpool_rejects_a_bad_edge_or_size():
    with pytest.raises(CnnFiltersError, match="edge must be 'drop' or 'partial', got 'keep'"):
        avgpool(np.zeros((1, 4, 4)), 2, "keep")
    with pytest.raises(CnnFiltersError, match="kernel size must be a positive int, got 0"):
        avgpool(np.zeros((1, 4, 4)), 0)


def test_kernels_takes_a_commands_name_and_an_avgpool_size():
    """A construction is named as its command (grayscale: its default weights) or
    with its own window size; any other name is refused with the choices."""
    import pytest

    from cnnfilters.errors import CnnFiltersError
    from cnnfilters.kernels import construction_named

    assert construction_named("grayscale").name == "grayscale-bt601"
    assert construction_named("avgpool", 4).name == "avgpool4"
    pooled = construction_named("avgpool3")
    assert pooled.name == "avgpool3" and pooled.weight.shape == (3, 1, 3, 3)
    assert construction_named("avgpool5-onehot").weight.shape == (25, 1, 5, 5)
    with pytest.raises(CnnFiltersError, match="unknown construction 'nope'; choose from gradient"):
        construction_named("nope")


@pytest.mark.parametrize("k", [256, 257])
def test_block_mean_sums_16_bit_blocks_past_32_bits_exactly(k):
    """k x k blocks of 65535 pass 2**32 from k = 257: the integer sums must not wrap."""
    x = np.full((1, k, 2 * k + 3), 65535, dtype=np.uint16)
    x[0, 0, 0] = 65534
    means = ref.block_mean(x, k)
    assert means.dtype == np.float64 and means.shape == (1, 1, 2)
    assert means[0, 0, 0] == (65535 * k * k - 1) / (k * k) and means[0, 0, 1] == 65535
    partial = ref.block_mean(x, k, edge="partial")
    assert partial.shape == (1, 1, 3) and partial[0, 0, 2] == 65535


@pytest.mark.parametrize("k", [True, 2.0, 0, -1])
def test_avgpool_names_a_kernel_size_that_is_not_a_positive_int(k):
    with pytest.raises(CnnFiltersError) as raised:
        avgpool(np.zeros((1, 5, 7), dtype=np.float32), k)
    assert str(raised.value) == f"kernel size must be a positive int, got {k!r}"


def test_avgpool_refuses_a_window_larger_than_the_image_before_making_its_weights():
    # 10**6 x 10**6 weights would be 4 TB: the refusal must come first.
    with pytest.raises(CnnFiltersError) as raised:
        avgpool(np.zeros((1, 5, 7), dtype=np.float32), 10**6)
    assert str(raised.value) == (
        "kernel size 1000000 is larger than the padded input (5 x 7 pixels, from 5 x 7)"
    )


def test_a_window_as_large_as_the_short_side_fits():
    pooled = avgpool(np.arange(24, dtype=np.float32).reshape(1, 4, 6), 4)
    assert pooled.shape == (1, 1, 1) and pooled.item() == np.arange(24).reshape(4, 6)[:, :4].mean()


def test_partial_blocks_are_rescaled_by_a_float32_factor():
    # Bit for bit: the pooled float32 means times k^2 / (rows * columns) in float32.
    from cnnfilters import avg_pool2d
    from cnnfilters.engine import pad2d

    x = np.random.default_rng(9).standard_normal((1, 61, 63)).astype(np.float32)
    got = avgpool(x, 4, edge="partial")
    want = avg_pool2d(pad2d(x, (0, 3, 0, 1)), 4)
    exact = np.ones((16, 16))
    exact[-1, :], exact[:, -1] = 4, 4 / 3  # one row, three columns of 4 x 4
    exact[-1, -1] = 16 / 3
    assert np.array_equal(got, want * exact.astype(np.float32))
    assert not np.array_equal(got, (want * exact).astype(np.float32))  # the test can tell


def test_avgpool_shape_drops_the_edge_unless_told():
    from cnnfilters.ops import avgpool_shape

    assert avgpool_shape(5, 7, 2) == avgpool_shape(5, 7, 2, "drop") == (2, 3)
    assert avgpool_shape(5, 7, 2, "partial") == (3, 4)


def test_grayscale_is_bt601_unless_told_and_computes_only_the_rows_asked():
    x = coordinate_grid(6, 4, channels=3)
    whole = grayscale(x)
    np.testing.assert_array_equal(whole, grayscale(x, "bt601"))
    np.testing.assert_array_equal(grayscale(x, rows=(2, 5)), whole[:, 2:5])
