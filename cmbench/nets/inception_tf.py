"""Inception-v3 as TensorFlow's 2015-12-05 graph computes it, loading torch-fidelity's weights file.

The graph (``classify_image_graph_def.pb`` of ``inception-2015-12-05.tgz``) is the network of
the TF FID / IS / sFID evaluators (TTUR, improved-gan, ADM's ``evaluations/evaluator.py``).
torch-fidelity converted its constants into ``weights-inception-2015-12-05-6726825d.pth``;
:class:`InceptionV3TF` has that file's state-dict keys exactly, so
``net.load_state_dict(torch.load(path, weights_only=True))`` loads it strictly, and computes
what torch-fidelity's ``FeatureExtractorInceptionV3`` computes:

- input: uint8 NCHW RGB of any size, cast to float32;
- :func:`resize_bilinear_tf1` to 299×299 (TF1 ``resize_bilinear``, ``align_corners=False``);
- ``(x - 128) / 128``;
- the TF variant of Inception-v3: every conv is conv (no bias) → batch norm (eps 0.001) →
  ReLU; the 3×3 average pools beside the 1×1 branches ignore the zero padding
  (``count_include_pad=False``), and the last block pools with a 3×3 max pool instead;
- ``pool``: the 2048-d global average of the last block (graph tensor ``pool_3:0``);
- ``logits``: ``pool @ fc.weight.T``, the 1008-way logits *without* the bias (torch-fidelity's
  ``logits_unbiased``; ADM's IS multiplies ``pool_3`` by the weights of
  ``softmax/logits/MatMul`` the same way);
- ``spatial``: ADM's sFID feature, see below.

All three come out of one forward pass (:meth:`InceptionV3TF.forward`).

Which layer is ADM's ``mixed_6/conv:0``
---------------------------------------
ADM takes graph tensor ``mixed_6/conv:0``, keeps ``[..., :7]`` of the NHWC tensor and reshapes
each image's ``17 × 17 × 7`` block to 2023 numbers. Our conclusion: it is the output (after
batch norm and ReLU) of the first 1×1 branch of torch-fidelity's ``Mixed_6d``, i.e.
``Mixed_6d.branch1x1``, channels 0–6, flattened in (height, width, channel) order. Evidence:

1. torch-fidelity's converter (``utils/util_convert_inception_weights.py`` in
   toshas/torch-fidelity) maps the graph constants ``mixed_6/conv/conv2d_params`` and
   ``mixed_6/conv/batchnorm/*`` to ``Mixed_6d.branch1x1.conv`` and ``Mixed_6d.branch1x1.bn``.
   Its table maps the blocks ``mixed, mixed_1, …, mixed_10`` to ``Mixed_5b, 5c, 5d, 6a, 6b, 6c,
   6d, 6e, 7a, 7b, 7c`` (checked entry by entry: ``mixed_3`` is the 35→17 reduction,
   ``Mixed_6a``; ``mixed_8`` the 17→8 reduction, ``Mixed_7a``, the only block with no plain
   ``conv``); so ``mixed_6`` is the third 17×17 block, ``Mixed_6d``, not ``Mixed_6e``.
2. In the 2015 graph every conv layer ``S`` is the op chain ``S/Conv2D``, ``S/batchnorm``
   (BatchNormWithGlobalNormalization), ``S/CheckNumerics``, ``S/control_dependency``, ``S``
   (the graph's op list, e.g. as printed in the Tensorflex documentation), so the op named
   ``mixed_6/conv`` is the last of the chain: the layer's activation after the batch norm. The
   op types are not printed there; that this op is the ReLU is our inference (it is the only
   op after the batch norm, and the TF Inception-v3 applies a ReLU after every batch norm), so
   ``mixed_6/conv:0`` = relu(bn(conv)) = the output of torch-fidelity's ``BasicConv2d``.
3. It has 192 channels at 17×17 (the resolution of ``mixed_4``–``mixed_7`` for a 299×299
   input), consistent with ADM's 2023 = 17·17·7. A user reached the same layer in
   openai/guided-diffusion issue #109 ("the first 192 channels of mixed_6d").

Because the block concatenates ``branch1x1`` first, channels 0–6 of ``Mixed_6d``'s output are
exactly channels 0–6 of ``branch1x1``; :meth:`InceptionV3TF.forward` slices the block output.
Not verified here: a numerical comparison with the TF graph itself (no TensorFlow and no real
weights on the machine this was written on). Other ports take ``Mixed_6e.branch1x1`` or the
whole 768-channel ``Mixed_6e`` output; by the converter's table both are a block off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INPUT_SIZE = 299
SPATIAL_CHANNELS = 7
SPATIAL_SIZE = 17
SPATIAL_DIM = SPATIAL_SIZE * SPATIAL_SIZE * SPATIAL_CHANNELS  # 2023
POOL_DIM = 2048
NUM_LOGITS = 1008


def resize_bilinear_tf1(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TF1 ``tf.image.resize_bilinear(images, size, align_corners=False)`` of float NCHW images.

    Output pixel (i, j) samples the input at (i·s_h, j·s_w) with s = in_size / out_size (no
    half-pixel offset): the four neighbours floor(·) and floor(·)+1 (clamped to the last
    row/column) are mixed first along the width, then along the height. Positions and weights
    are float32 as in TF's kernel (``resize_bilinear_op.cc``), so the result is TF's to rounding.
    """
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"resize_bilinear_tf1 takes float NCHW images, got {images.dtype} with shape {tuple(images.shape)}")
    out_h, out_w = int(size[0]), int(size[1])
    rows = _source_positions(images.shape[2], out_h, images.device)
    cols = _source_positions(images.shape[3], out_w, images.device)
    y0, y1, wy = (t.view(out_h, 1) for t in rows)
    x0, x1, wx = cols

    def pick(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return images[:, :, y, x]

    top_left, top_right = pick(y0, x0), pick(y0, x1)
    bottom_left, bottom_right = pick(y1, x0), pick(y1, x1)
    wx, wy = wx.to(images.dtype), wy.to(images.dtype)
    top = top_left + (top_right - top_left) * wx
    bottom = bottom_left + (bottom_right - bottom_left) * wx
    return top + (bottom - top) * wy


def _source_positions(in_size: int, out_size: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(lower index, upper index, weight of the upper one) for each output coordinate."""
    scale = torch.tensor(in_size / out_size, dtype=torch.float32)  # TF: float(in) / float(out)
    pos = torch.arange(out_size, dtype=torch.float32) * scale
    lower = pos.floor()
    frac = pos - lower
    lower = lower.long()
    upper = (lower + 1).clamp(max=in_size - 1)
    return lower.to(device), upper.to(device), frac.to(device)


class ConvBN(nn.Module):
    """conv (no bias) → batch norm (eps 0.001, TF's) → ReLU: one TF conv layer."""

    def __init__(self, c_in: int, c_out: int, kernel, stride: int = 1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_unpadded(x: torch.Tensor) -> torch.Tensor:
    """3×3 stride-1 'SAME' average pool that averages only the real pixels, as TF does."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def _max_pool_same(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 3, stride=1, padding=1)


def _max_pool_reduce(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 3, stride=2)


def _run(x: torch.Tensor, *layers: nn.Module) -> torch.Tensor:
    for layer in layers:
        x = layer(x)
    return x


class Block35(nn.Module):
    """35×35 block (graph ``mixed`` … ``mixed_2``): 1×1 | 1×1→5×5 | 1×1→3×3→3×3 | avg→1×1."""

    def __init__(self, c_in: int, pool_channels: int):
        super().__init__()
        self.branch1x1 = ConvBN(c_in, 64, 1)
        self.branch5x5_1 = ConvBN(c_in, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(c_in, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(c_in, pool_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x),
            _run(x, self.branch5x5_1, self.branch5x5_2),
            _run(x, self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3),
            self.branch_pool(_avg_pool_unpadded(x)),
        ], 1)


class Reduce35(nn.Module):
    """35→17 reduction (graph ``mixed_3``): 3×3/2 | 1×1→3×3→3×3/2 | max 3×3/2."""

    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3 = ConvBN(c_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(c_in, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch3x3(x),
            _run(x, self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3),
            _max_pool_reduce(x),
        ], 1)


class Block17(nn.Module):
    """17×17 block (graph ``mixed_4`` … ``mixed_7``) with factorised 7×7 convolutions."""

    def __init__(self, c_in: int, width: int):
        super().__init__()
        row, col = ((1, 7), (0, 3)), ((7, 1), (3, 0))  # (kernel, padding) of a 1×7 and a 7×1 conv
        self.branch1x1 = ConvBN(c_in, 192, 1)
        self.branch7x7_1 = ConvBN(c_in, width, 1)
        self.branch7x7_2 = ConvBN(width, width, row[0], padding=row[1])
        self.branch7x7_3 = ConvBN(width, 192, col[0], padding=col[1])
        self.branch7x7dbl_1 = ConvBN(c_in, width, 1)
        self.branch7x7dbl_2 = ConvBN(width, width, col[0], padding=col[1])
        self.branch7x7dbl_3 = ConvBN(width, width, row[0], padding=row[1])
        self.branch7x7dbl_4 = ConvBN(width, width, col[0], padding=col[1])
        self.branch7x7dbl_5 = ConvBN(width, 192, row[0], padding=row[1])
        self.branch_pool = ConvBN(c_in, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x),
            _run(x, self.branch7x7_1, self.branch7x7_2, self.branch7x7_3),
            _run(x, self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                 self.branch7x7dbl_4, self.branch7x7dbl_5),
            self.branch_pool(_avg_pool_unpadded(x)),
        ], 1)


class Reduce17(nn.Module):
    """17→8 reduction (graph ``mixed_8``): 1×1→3×3/2 | 1×1→1×7→7×1→3×3/2 | max 3×3/2."""

    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3_1 = ConvBN(c_in, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(c_in, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            _run(x, self.branch3x3_1, self.branch3x3_2),
            _run(x, self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4),
            _max_pool_reduce(x),
        ], 1)


class Block8(nn.Module):
    """8×8 block (graph ``mixed_9``, ``mixed_10``) with split 1×3 / 3×1 outputs.

    ``pool`` is ``"avg"`` (unpadded average) for ``mixed_9`` and ``"max"`` for ``mixed_10``,
    where the TF graph has a max pool (unlike the paper).
    """

    def __init__(self, c_in: int, pool: str):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"Block8 pool must be 'avg' or 'max', got {pool!r}")
        self.pool = _avg_pool_unpadded if pool == "avg" else _max_pool_same
        self.branch1x1 = ConvBN(c_in, 320, 1)
        self.branch3x3_1 = ConvBN(c_in, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(c_in, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(c_in, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        narrow = self.branch3x3_1(x)
        wide = _run(x, self.branch3x3dbl_1, self.branch3x3dbl_2)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(narrow), self.branch3x3_2b(narrow),
            self.branch3x3dbl_3a(wide), self.branch3x3dbl_3b(wide),
            self.branch_pool(self.pool(x)),
        ], 1)


class InceptionV3TF(nn.Module):
    """The 2015-12-05 TF Inception-v3; parameter names are those of torch-fidelity's weights file."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = Block35(192, 32)
        self.Mixed_5c = Block35(256, 64)
        self.Mixed_5d = Block35(288, 64)
        self.Mixed_6a = Reduce35(288)
        self.Mixed_6b = Block17(768, 128)
        self.Mixed_6c = Block17(768, 160)
        self.Mixed_6d = Block17(768, 160)  # graph mixed_6: its branch1x1 is "mixed_6/conv"
        self.Mixed_6e = Block17(768, 192)
        self.Mixed_7a = Reduce17(768)
        self.Mixed_7b = Block8(1280, "avg")
        self.Mixed_7c = Block8(2048, "max")
        self.fc = nn.Linear(POOL_DIM, NUM_LOGITS)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"pool": [N, 2048], "logits": [N, 1008], "spatial": [N, 2023]}`` of RGB NCHW images:
        uint8, or float32 in [0, 255] already resized by another recipe (the resize to 299 is
        then the identity)."""
        if images.dtype not in (torch.uint8, torch.float32) or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"InceptionV3TF takes uint8 (or float32 in [0, 255]) RGB images [N, 3, H, W], "
                             f"got {images.dtype} with shape {tuple(images.shape)}")
        x = resize_bilinear_tf1(images.to(torch.float32), (INPUT_SIZE, INPUT_SIZE))
        x = (x - 128) / 128
        x = _run(x, self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3)
        x = _max_pool_reduce(x)
        x = _run(x, self.Conv2d_3b_1x1, self.Conv2d_4a_3x3)
        x = _max_pool_reduce(x)
        x = _run(x, self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c, self.Mixed_6d)
        # Channels 0-6 of the block output are channels 0-6 of branch1x1 ("mixed_6/conv"), kept
        # in TF's NHWC order: (row, column, channel).
        spatial = x[:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).flatten(1)
        x = _run(x, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c)
        pool = F.adaptive_avg_pool2d(x, 1).flatten(1)
        logits = pool.mm(self.fc.weight.T)
        return {"pool": pool, "logits": logits, "spatial": spatial}
