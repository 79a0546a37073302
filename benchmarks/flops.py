"""How much arithmetic one training image costs: the multiply-adds of every layer's products.

Only Conv2d and Linear multiply and add; pooling, activations, flatten and the loss compare,
copy or touch each value once (well under 1% of the count), so they count as 0. Per layer
and image, with ``M`` the multiply-adds of its forward product:

- Linear(in, out): ``M = in * out``;
- Conv2d: ``M = C_out * H_out * W_out * C_in * kH * kW`` (one product per output value and
  kernel tap);
- backward computes two products of the same size, ``dW`` and ``dX``, so ``2 * M``; the
  first layer skips ``dX`` when its input needs no gradient (``input_grad = False``).

A training step is ``forward + backward``; a FLOP is half a multiply-add.
"""

from __future__ import annotations

import numpy as np

import nn


def multiply_adds(model: nn.Sequential, image_shape=(1, 28, 28)) -> dict[str, int]:
    """Multiply-adds per image of ``model``'s forward and backward.

    Parameters
    ----------
    model : nn.Sequential
        The network (its layers are run once, in eval mode, on one zero image to learn the
        shapes; its mode is restored).
    image_shape : (C, H, W), default (1, 28, 28)

    Returns
    -------
    dict
        ``forward``, ``backward`` (``dW`` and ``dX`` of every Conv2d and Linear, without the
        first layer's ``dX`` when ``model.input_grad`` is False) and ``step`` (their sum),
        per image.
    """
    was_training = model.training
    model.eval()
    x = np.zeros((1, *image_shape), dtype=np.float32)
    forward = backward = 0
    try:
        for index, layer in enumerate(model):
            out = layer.forward(x)
            if isinstance(layer, nn.Conv2d):
                kh, kw = layer.kernel_size
                count = out.size * layer.in_channels * kh * kw
            elif isinstance(layer, nn.Linear):
                count = layer.in_features * layer.out_features
            else:
                count = 0
            forward += count
            backward += count if index == 0 and not model.input_grad else 2 * count
            x = out
    finally:
        model.train(was_training)
    return {"forward": forward, "backward": backward, "step": forward + backward}
