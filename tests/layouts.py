"""The memory layouts an NCHW array can reach a layer in: one home for the tests' variants.

Our layers hand each other NCHW *views* of batch-last ``(C, H, W, N)`` memory (see
``nn/im2col.py``); users pass plain NCHW; anything else (a transposed or cropped view) must
still give the same numbers, even where it takes a slower path.
"""

import numpy as np

LAYOUTS = ["nchw", "batch_last", "channel_major", "cropped_rows"]


def in_layout(array: np.ndarray, layout: str) -> np.ndarray:
    """The same values as ``array`` (N, C, H, W), laid out in memory as ``layout`` says.

    ``nchw``: contiguous; ``batch_last``: a view of (C, H, W, N) memory, as our layers return;
    ``channel_major``: a view of (C, N, H, W) memory; ``cropped_rows``: rows cropped out of
    wider NaN-padded rows (reading the padding would show). Arrays that are not 4-D come back
    contiguous.
    """
    if layout == "nchw" or array.ndim != 4:
        return np.ascontiguousarray(array)
    if layout == "batch_last":
        return np.ascontiguousarray(array.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    if layout == "channel_major":
        return np.ascontiguousarray(array.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    n, c, h, w = array.shape
    wide = np.full((c, n, h, w + 3), np.nan, dtype=array.dtype)
    wide[..., :w] = array.transpose(1, 0, 2, 3)
    return wide[..., :w].transpose(1, 0, 2, 3)
