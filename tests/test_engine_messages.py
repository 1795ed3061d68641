"""Every argument error of the engine, word for word: the message is what a user reads,
so a changed word is a changed product (and a test that matched part of it would not
see a value printed from the wrong axis). Inputs are 5 x 7, never square, so that
each message shows which axis it speaks of."""

from __future__ import annotations

import numpy as np
import pytest

from cnnfilters import CnnFiltersError, avg_pool2d, conv2d, max_pool2d
from cnnfilters.engine import conv2d_grad, pad2d

X = np.zeros((1, 5, 7), np.float32)
BATCH = np.zeros((2, 1, 5, 7), np.float32)
W = np.ones((2, 1, 3, 3), np.float32)
W2 = np.ones((2, 2, 3, 3), np.float32)


def _kernel(h: int, w: int, c_out: int = 1) -> np.ndarray:
    return np.ones((c_out, 1, h, w), np.float32)


CASES = [
    (lambda: conv2d(X, W, stride=0), "stride must be positive, got 0"),
    (lambda: conv2d(X, W, stride=(1, 0)), "stride must be positive, got (1, 0)"),
    (lambda: conv2d(X, W, dilation=(0, 1)), "dilation must be positive, got (0, 1)"),
    (lambda: conv2d(X, W, padding=(0, -1)), "padding must be non-negative, got (0, -1)"),
    (lambda: conv2d(X, W, padding="full"),
     "padding must be an int, a pair, 'same' or 'valid', got 'full'"),
    (lambda: conv2d(X, _kernel(3, 3, 3), groups=2),
     "input channels (1) must be divisible by groups (2)"),
    (lambda: conv2d(X, _kernel(6, 2)),
     "kernel size 6 x 2 is larger than the padded input (5 x 7 pixels, from 5 x 7)"),
    (lambda: conv2d(X, _kernel(2, 9)),
     "kernel size 2 x 9 is larger than the padded input (5 x 7 pixels, from 5 x 7)"),
    (lambda: conv2d(X, _kernel(3, 2), dilation=(1, 7)),
     "kernel size 3 x 8 is larger than the padded input (5 x 7 pixels, from 5 x 7)"),
    (lambda: conv2d(X, W, padding=(1, 7), padding_mode="reflect"),
     "reflect padding of 1 x 7 needs an input larger than the padding, got 5 x 7 pixels"),
    (lambda: conv2d(X, W, padding=(5, 1), padding_mode="reflect"),
     "reflect padding of 5 x 1 needs an input larger than the padding, got 5 x 7 pixels"),
    (lambda: conv2d(X, W, padding=(1, 8), padding_mode="circular"),
     "circular padding of 1 x 8 wraps around more than once on an input of 5 x 7 pixels"),
    (lambda: conv2d(np.zeros((1, 0, 7), np.float32), W, padding=1, padding_mode="replicate"),
     "cannot replicate-pad an empty input (0 x 7 pixels)"),
    (lambda: conv2d(np.zeros((1, 5, 0), np.float32), W, padding=1, padding_mode="replicate"),
     "cannot replicate-pad an empty input (5 x 0 pixels)"),
    (lambda: max_pool2d(X, (6, 2)),
     "kernel size (6, 2) is larger than the padded input (5 x 7 pixels, from 5 x 7)"),
    (lambda: max_pool2d(X, (2, 8)),
     "kernel size (2, 8) is larger than the padded input (5 x 7 pixels, from 5 x 7)"),
    (lambda: max_pool2d(X, (2, 4), padding=(1, 3)),
     "padding (1, 3) must be at most half the kernel size (2, 4)"),
    (lambda: max_pool2d(X, (2, 4), padding=(2, 1)),
     "padding (2, 1) must be at most half the kernel size (2, 4)"),
    (lambda: max_pool2d(X, 2, stride=(1, 0)), "stride must be positive, got (1, 0)"),
    (lambda: max_pool2d(X, 2, dilation=(0, 1)), "dilation must be positive, got (0, 1)"),
    (lambda: max_pool2d(X, 2, padding=(0, -1)), "padding must be non-negative, got (0, -1)"),
    (lambda: avg_pool2d(X, (2, 8)),
     "kernel size 2 x 8 is larger than the padded input (5 x 7 pixels, from 5 x 7)"),
    (lambda: avg_pool2d(X, (4, 2), padding=(3, 1)),
     "padding (3, 1) must be at most half the kernel size (4, 2)"),
    (lambda: pad2d(X, (0, 0, 7, 0), mode="reflect"),
     "reflect padding of 0 x 7 needs an input larger than the padding, got 5 x 7 pixels"),
    (lambda: pad2d(X, (0, -1, 0, 0)), "padding must be non-negative, got (0, -1, 0, 0)"),
    (lambda: pad2d(X, (1, 1, 1, 1), mode="mirror"),
     "padding mode must be one of zeros, replicate, reflect, circular, got 'mirror'"),
    (lambda: conv2d_grad(X, W, np.ones((2, 3, 4), np.float32)),
     "grad_out must have shape (2, 3, 5), got (2, 3, 4)"),
    (lambda: conv2d_grad(BATCH, W, np.ones((2, 2, 3, 4), np.float32)),
     "grad_out must have shape (2, 2, 3, 5), got (2, 2, 3, 4)"),
    (lambda: conv2d(X, W2),
     "weight of shape (2, 2, 3, 3) expects 2 input channels with groups=1, got 1 "
     "(input shape (1, 5, 7))"),
    (lambda: conv2d(BATCH, W2),
     "weight of shape (2, 2, 3, 3) expects 2 input channels with groups=1, got 1 "
     "(input shape (2, 1, 5, 7))"),
    (lambda: conv2d_grad(X, W2, np.ones((2, 3, 5), np.float32)),
     "weight of shape (2, 2, 3, 3) expects 2 input channels with groups=1, got 1 "
     "(input shape (1, 5, 7))"),
    (lambda: conv2d(X, np.ones((0, 1, 3, 3), np.float32)),
     "weight must not be empty, got shape (0, 1, 3, 3)"),
    (lambda: conv2d(X, np.ones((2, 1, 0, 3), np.float32)),
     "weight must not be empty, got shape (2, 1, 0, 3)"),
    (lambda: conv2d(X, np.ones((2, 1, 3, 0), np.float32)),
     "weight must not be empty, got shape (2, 1, 3, 0)"),
    (lambda: conv2d(X, W, rows=(2, 1)), "rows (2, 1) are outside the output's 0..3"),
    (lambda: max_pool2d(X, 2, padding=(1, 2, 3)),
     "padding must be an int or a pair of ints, got (1, 2, 3)"),
]  # fmt: skip


@pytest.mark.parametrize(("call", "message"), CASES, ids=[m[:40] for _, m in CASES])
def test_each_argument_error_says_exactly_what_is_wrong(call, message):
    with pytest.raises(CnnFiltersError) as caught:
        call()
    assert str(caught.value) == message
