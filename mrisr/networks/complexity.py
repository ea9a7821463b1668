"""Model size and compute: parameter counts and multiply-accumulates per output voxel."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from mrisr.networks.blocks import WindowAttention

__all__ = ["count_parameters", "macs_per_output_voxel"]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (shared weights counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _conv_macs(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> int:
    # Each output element of a conv costs (in_channels / groups) * kernel-area MACs.
    kernel = module.weight.shape[2:].numel()
    return output.numel() * (module.in_channels // module.groups) * kernel


def _transposed_conv_macs(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> int:
    # Each input element is scattered to out_channels / groups * kernel-area outputs.
    kernel = module.weight.shape[2:].numel()
    return inputs[0].numel() * (module.out_channels // module.groups) * kernel


def _linear_macs(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> int:
    return output.numel() * module.in_features


def _attention_macs(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> int:
    # q @ k^T and attn @ v: each N * N * C per window (C summed over heads);
    # the qkv and output projections are Linear layers, counted there.
    windows, n, c = inputs[0].shape
    return 2 * windows * n * n * c


_COUNTERS = (
    (nn.Conv2d, _conv_macs),
    (nn.Conv1d, _conv_macs),
    (nn.Conv3d, _conv_macs),
    (nn.ConvTranspose2d, _transposed_conv_macs),
    (nn.Linear, _linear_macs),
    (WindowAttention, _attention_macs),
)


@torch.no_grad()
def macs_per_output_voxel(
    model: nn.Module, in_rows: int = 64, cols: int = 64, factor: float = 4.0
) -> float:
    """Multiply-accumulates per output voxel of one generator forward pass.

    Runs the generator once in eval mode on a (1, 1, in_rows, cols) zero
    input with ``out_rows = round(in_rows * factor)`` and sums, with forward
    hooks, the MACs of every convolution (grouped and depthwise included),
    transposed convolution, linear layer and windowed-attention matmul
    (``q k^T`` and ``attn v``). Not counted: activations, normalisation,
    attention softmax, pooling, element-wise adds and gates, pixel shuffles,
    and the interpolations (bicubic residual, row resampling), each a few
    operations per voxel at most.

    Args:
        model: a generator with ``forward(x, out_rows)``.
        in_rows: input rows (thick axis).
        cols: columns.
        factor: upsampling factor along rows.

    Returns:
        Total MACs divided by ``out_rows * cols``.
    """
    out_rows = round(in_rows * factor)
    total = 0

    def hook(counter: Callable[[nn.Module, tuple[Tensor, ...], Tensor], int]) -> Callable:
        def run(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            nonlocal total
            total += counter(module, inputs, output)

        return run

    handles = []
    for module in model.modules():
        for kind, counter in _COUNTERS:
            if isinstance(module, kind):
                handles.append(module.register_forward_hook(hook(counter)))
                break
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, 1, in_rows, cols, device=device, dtype=dtype), out_rows)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total / (out_rows * cols)
