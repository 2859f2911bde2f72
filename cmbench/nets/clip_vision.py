"""CLIP's image tower (Radford et al. 2021) in Hugging Face's checkpoint layout: CMMD's embedding network.

:class:`CLIPVisionTower` computes what transformers' ``CLIPVisionModelWithProjection`` returns as
``image_embeds`` (and ``CLIPModel.get_image_features``), the same network as openai/CLIP's
``VisionTransformer`` and scenic's Flax port that google-research/cmmd runs:

- ``pixels`` ``[N, 3, S, S]`` (already normalised with CLIP's mean and std) are cut into
  ``patch × patch`` patches by a bias-free strided convolution;
- a learned class token is put in front, learned position embeddings are added, and a LayerNorm
  (HF's ``pre_layrnorm``, spelled so in every checkpoint; openai's ``ln_pre``) follows;
- ``layers`` pre-norm transformer blocks: ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``, with
  multi-head attention (separate q/k/v/out projections with biases, scores scaled by
  ``head_dim**-0.5``, no mask) and an MLP ``fc2(quick_gelu(fc1(x)))``,
  quick_gelu(x) = x·sigmoid(1.702·x);
- the class token's output goes through ``post_layernorm`` (openai's ``ln_post``) and the
  bias-free ``visual_projection`` (openai's ``proj``) to the ``projection``-d embedding.

All LayerNorms use eps 1e-5. The embedding comes out *unnormalised*; CMMD divides it by its L2
norm (:mod:`cmbench.features.clip`).

Parameter names are HF's (``vision_model.…`` and ``visual_projection.weight``), so the vision
entries of HF's ``pytorch_model.bin`` / ``model.safetensors`` for ``openai/clip-vit-large-patch14-336``
load strictly (:func:`vision_state_dict`); the whole-CLIP file's text tower is set aside by
name and anything else is refused.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoints.native import load_plain_state
from ..checkpoints.safetensors_file import read_safetensors


@dataclass(frozen=True)
class CLIPVisionConfig:
    """The shape of a CLIP ViT image tower. The activation is quick_gelu and LayerNorm eps 1e-5 for
    every OpenAI CLIP ViT, so they are not options."""

    hidden_size: int
    layers: int
    heads: int
    patch_size: int
    image_size: int
    projection_dim: int
    mlp_ratio: int = 4
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.hidden_size % self.heads:
            raise ValueError(f"CLIP hidden_size {self.hidden_size} is not a multiple of heads {self.heads}")
        if self.image_size % self.patch_size:
            raise ValueError(f"CLIP image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")

    @property
    def positions(self) -> int:
        """Patches plus the class token."""
        return (self.image_size // self.patch_size) ** 2 + 1


VITL14_336 = CLIPVisionConfig(hidden_size=1024, layers=24, heads=16, patch_size=14, image_size=336, projection_dim=768)
"""OpenAI's ViT-L/14@336px (HF ``openai/clip-vit-large-patch14-336``; scenic's ``vit_l14_336px``)."""

TEXT_PREFIXES = ("text_model.", "text_projection.", "logit_scale")
"""Entries of a whole-CLIP file that belong to the text side (and the logit scale): set aside."""

IGNORED_BUFFERS = ("vision_model.embeddings.position_ids",)
"""Index buffers older HF files saved along with the weights (``arange(positions)``): set aside."""


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """OpenAI CLIP's GELU approximation, x·σ(1.702·x)."""
    return x * torch.sigmoid(1.702 * x)


class Embeddings(nn.Module):
    """Patch embedding, class token and position embeddings (HF ``vision_model.embeddings``)."""

    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        d, p = config.hidden_size, config.patch_size
        self.class_embedding = nn.Parameter(torch.zeros(d))
        self.patch_embedding = nn.Conv2d(3, d, kernel_size=p, stride=p, bias=False)
        self.position_embedding = nn.Embedding(config.positions, d)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embedding(pixels).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(len(pixels), 1, -1)
        return torch.cat([cls, patches], dim=1) + self.position_embedding.weight


class Attention(nn.Module):
    """Multi-head self-attention with separate q, k, v and output projections (all with biases)."""

    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        d = config.hidden_size
        self.heads = config.heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(n, t, self.heads, d // self.heads).transpose(1, 2)

        # scaled_dot_product_attention scales the scores by head_dim**-0.5, as CLIP does
        out = F.scaled_dot_product_attention(split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)))
        return self.out_proj(out.transpose(1, 2).reshape(n, t, d))


class MLP(nn.Module):
    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.mlp_ratio * config.hidden_size)
        self.fc2 = nn.Linear(config.mlp_ratio * config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(quick_gelu(self.fc1(x)))


class Block(nn.Module):
    """A pre-norm transformer block (HF ``encoder.layers.{i}``)."""

    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = Attention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nn.Module):
    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.layers = nn.ModuleList(Block(config) for _ in range(config.layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class VisionModel(nn.Module):
    """HF's ``vision_model``: embeddings, ``pre_layrnorm``, encoder, and ``post_layernorm`` of the class token."""

    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.embeddings = Embeddings(config)
        self.pre_layrnorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.encoder = Encoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.encoder(self.pre_layrnorm(self.embeddings(pixels)))
        return self.post_layernorm(x[:, 0])


class CLIPVisionTower(nn.Module):
    """Normalised ``[N, 3, S, S]`` pixels → the unnormalised ``[N, projection_dim]`` image embedding."""

    def __init__(self, config: CLIPVisionConfig = VITL14_336):
        super().__init__()
        self.config = config
        self.vision_model = VisionModel(config)
        self.visual_projection = nn.Linear(config.hidden_size, config.projection_dim, bias=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        size = self.config.image_size
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, size, size):
            raise ValueError(f"the CLIP image tower takes [N, 3, {size}, {size}] pixels, got {tuple(pixels.shape)}")
        return self.visual_projection(self.vision_model(pixels))


def read_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """{name: tensor} of an HF ``pytorch_model.bin`` (``torch.load(weights_only=True)``: no code
    runs; memory-mapped when the file is torch's zip format) or ``.safetensors`` file (cmbench's
    data-only reader). Raises ValueError naming the file for anything else."""
    path = Path(path)
    if path.suffix == ".safetensors":
        data = bytearray(path.stat().st_size)  # one buffer the tensors view, not a copy of a copy
        with open(path, "rb") as f:
            f.readinto(data)
        return read_safetensors(data, path)
    state = load_plain_state(path, path, mmap=zipfile.is_zipfile(path))
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ValueError(f"{path}: expected a dict of parameter names to tensors (an HF CLIP weights file), "
                         f"got a {type(state).__name__}")
    return state


def vision_state_dict(tensors: Mapping[str, torch.Tensor], config: CLIPVisionConfig, path: str | Path) -> dict[str, torch.Tensor]:
    """The entries of an HF CLIP weights file that :class:`CLIPVisionTower` ``(config)`` takes, as float32.

    Text-side entries (:data:`TEXT_PREFIXES`) and saved index buffers (:data:`IGNORED_BUFFERS`)
    are set aside. Raises ValueError naming ``path`` and the key for an entry that is missing,
    has another shape, is not floating point, or is unknown.
    """
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in CLIPVisionTower(config).state_dict().items()}
    unknown = [k for k in tensors if k not in expected and k not in IGNORED_BUFFERS and not k.startswith(TEXT_PREFIXES)]
    if unknown:
        raise ValueError(f"{path}: unknown entr{'y' if len(unknown) == 1 else 'ies'} {', '.join(map(repr, unknown[:5]))}"
                         f"{' …' if len(unknown) > 5 else ''}; an HF CLIP file holds vision_model.*, visual_projection.weight "
                         f"and the text side ({', '.join(TEXT_PREFIXES)})")
    missing = [k for k in expected if k not in tensors]
    if missing:
        raise ValueError(f"{path}: missing entr{'y' if len(missing) == 1 else 'ies'} {', '.join(map(repr, missing[:5]))}"
                         f"{' …' if len(missing) > 5 else ''} of the CLIP image tower")
    state = {}
    for key, shape in expected.items():
        value = tensors[key]
        if tuple(value.shape) != shape:
            raise ValueError(f"{path}: entry {key!r} has shape {list(value.shape)}, the CLIP image tower "
                             f"({_describe(config)}) needs {list(shape)}")
        if not value.is_floating_point():
            raise ValueError(f"{path}: entry {key!r} is {value.dtype}, expected floating-point weights")
        state[key] = value.float()
    return state


def load_clip_vision(path: str | Path, config: CLIPVisionConfig = VITL14_336) -> CLIPVisionTower:
    """A :class:`CLIPVisionTower` with the image-side weights of the HF CLIP file at ``path``, in eval mode.

    Built on the meta device and filled by assignment (no random init of ~0.3 B weights about to
    be replaced); every parameter must come from the file (:func:`vision_state_dict`).
    """
    state = vision_state_dict(read_weights_file(path), config, path)
    with torch.device("meta"):
        net = CLIPVisionTower(config)
    net.load_state_dict(state, strict=True, assign=True)
    return net.requires_grad_(False).eval()


def _describe(config: CLIPVisionConfig) -> str:
    return (f"hidden {config.hidden_size}, {config.layers} layers, patch {config.patch_size}, "
            f"image {config.image_size}, projection {config.projection_dim}")
