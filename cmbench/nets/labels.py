"""The label inputs every cmbench network checks the same way: noise labels and class indices.

A mismatch between a checkpoint and a suite (a conditional net given no labels, an unconditional
one given some, one-hot vectors where indices are due) fails here with the network's name rather
than as silently unconditional samples or a shape error deep inside a layer.
"""

from __future__ import annotations

import torch


def batch_labels(labels: torch.Tensor, batch: int, name: str, net: str) -> torch.Tensor:
    """``labels`` (noise levels, one per image) as shape ``[batch]``; a scalar is broadcast."""
    labels = torch.as_tensor(labels)
    if labels.ndim == 0:
        return labels.expand(batch)
    if labels.shape != (batch,):
        raise ValueError(f"{net}: {name} must have shape [{batch}] (or be a scalar), got {tuple(labels.shape)}")
    return labels


def class_indices(class_labels: torch.Tensor | None, batch: int, num_classes: int, net: str) -> torch.Tensor | None:
    """int64 class indices ``[batch]`` in ``[0, num_classes)``, or ``None`` for an unconditional
    net (``num_classes == 0``), which refuses labels. The range is checked on the CPU only: on an
    accelerator the check would synchronise, and the embedding asserts there itself."""
    if not num_classes:
        if class_labels is not None:
            raise ValueError(f"{net} is unconditional but class_labels were given")
        return None
    if class_labels is None:
        raise ValueError(f"{net} is class-conditional ({num_classes} classes); class_labels (integer [B]) are required")
    if class_labels.is_floating_point() or class_labels.is_complex() or class_labels.shape != (batch,):
        raise ValueError(
            f"{net}: class_labels must be integer indices of shape [{batch}], got "
            f"{class_labels.dtype} {tuple(class_labels.shape)}"
        )
    if batch and class_labels.device.type == "cpu" and (int(class_labels.min()) < 0 or int(class_labels.max()) >= num_classes):
        raise ValueError(f"{net}: class_labels must lie in [0, {num_classes}), got values outside it")
    return class_labels.long()
