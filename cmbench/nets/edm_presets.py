"""Constructor arguments of the released EDM and CTM CIFAR-10 networks, named after the checkpoints.

Each preset is ``(class name, kwargs)`` with the arguments EDM's ``train.py`` passes the network
for that checkpoint (its README lists the command lines): ``--arch=ddpmpp`` for the ``-vp``
SongUNets, ``--arch=ncsnpp`` for the ``-ve`` ones, ``--arch=adm`` for ImageNet-64; the default
``--augment`` (0.12, or the 0.15 of the 64×64 runs) gives ``augment_dim=9``, ImageNet's
``--augment=0`` gives none; ``--dropout`` defaults to 0.13. The image size, channels and
``label_dim`` come from the dataset. An EDM pickle records the same arguments as
``_init_kwargs``; the presets let cmbench build the nets (e.g. on the meta device) without one.

CTM's CIFAR-10 student (Kim-Dongjun/ctm-cifar10 ``EDMPrecond_CTM`` with ``arch='ddpmpp'``,
``training_mode='ctm'``) is DDPM++ at CTM's SongUNet defaults (dropout 0.13, no augmentation
input) with the s branch. CTM saves the whole preconditioner, so its state-dict keys carry a
``model.`` prefix that a loader strips.
"""

from __future__ import annotations

import copy

from torch import nn

from cmbench.nets.dhariwal_unet import DhariwalUNet
from cmbench.nets.song_unet import SongUNet

EDM_NETWORK_CLASSES: dict[str, type[nn.Module]] = {"SongUNet": SongUNet, "DhariwalUNet": DhariwalUNet}

_DDPMPP = dict(
    embedding_type="positional", encoder_type="standard", decoder_type="standard",
    channel_mult_noise=1, resample_filter=[1, 1], model_channels=128, channel_mult=[2, 2, 2],
)
_NCSNPP = dict(
    embedding_type="fourier", encoder_type="residual", decoder_type="standard",
    channel_mult_noise=2, resample_filter=[1, 3, 3, 1], model_channels=128, channel_mult=[2, 2, 2],
)
_RGB = dict(in_channels=3, out_channels=3)
_EDM_CIFAR10 = dict(img_resolution=32, augment_dim=9, dropout=0.13, **_RGB)
_EDM_64 = dict(img_resolution=64, channel_mult=[1, 2, 2, 2], augment_dim=9, label_dim=0, **_RGB)
_CTM_CIFAR10 = dict(img_resolution=32, dropout=0.13, s_embedding=True, **_RGB)
_ADM_IMAGENET64 = dict(
    img_resolution=64, label_dim=1000, augment_dim=0, model_channels=192, channel_mult=[1, 2, 3, 4], dropout=0.10,
    **_RGB,
)

EDM_PRESETS: dict[str, tuple[str, dict]] = {
    "edm-cifar10-32x32-cond-vp": ("SongUNet", {**_DDPMPP, **_EDM_CIFAR10, "label_dim": 10}),
    "edm-cifar10-32x32-uncond-vp": ("SongUNet", {**_DDPMPP, **_EDM_CIFAR10, "label_dim": 0}),
    "edm-cifar10-32x32-cond-ve": ("SongUNet", {**_NCSNPP, **_EDM_CIFAR10, "label_dim": 10}),
    "edm-cifar10-32x32-uncond-ve": ("SongUNet", {**_NCSNPP, **_EDM_CIFAR10, "label_dim": 0}),
    "edm-ffhq-64x64-uncond-vp": ("SongUNet", {**_DDPMPP, **_EDM_64, "dropout": 0.05}),
    "edm-ffhq-64x64-uncond-ve": ("SongUNet", {**_NCSNPP, **_EDM_64, "dropout": 0.05}),
    "edm-afhqv2-64x64-uncond-vp": ("SongUNet", {**_DDPMPP, **_EDM_64, "dropout": 0.25}),
    "edm-afhqv2-64x64-uncond-ve": ("SongUNet", {**_NCSNPP, **_EDM_64, "dropout": 0.25}),
    "edm-imagenet-64x64-cond-adm": ("DhariwalUNet", dict(_ADM_IMAGENET64)),
    "ctm-cifar10-32x32-cond": ("SongUNet", {**_DDPMPP, **_CTM_CIFAR10, "label_dim": 10}),
    "ctm-cifar10-32x32-uncond": ("SongUNet", {**_DDPMPP, **_CTM_CIFAR10, "label_dim": 0}),
}

def edm_preset_network(name: str) -> nn.Module:
    """A freshly initialised network of preset ``name`` (build under ``torch.device("meta")``
    to get the structure without allocating)."""
    try:
        class_name, kwargs = EDM_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown EDM network preset {name!r}; accepted: {', '.join(EDM_PRESETS)}") from None
    return EDM_NETWORK_CLASSES[class_name](**copy.deepcopy(kwargs))
