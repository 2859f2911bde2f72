"""Time cmbench's DINOv2 and CLIP feature networks and its CMMD against transformers and cmmd's distance.py.

- DINOv2 ViT-L/14 (:mod:`cmbench.nets.dinov2`, through ``DINOv2Extractor``) against transformers'
  ``Dinov2Model`` holding the same random weights (official layout, mapped to transformers'
  names, the positional grid resized for 224×224 by cmbench's function and handed over ready-made):
  the forward on preprocessed 224×224 batches, and cmbench's whole ``extract`` from uint8 64×64
  images (EDM2's resize and normalisation included; no peer);
- CLIP ViT-L/14@336 (``CLIPExtractor`` reading an HF-layout ``pytorch_model.bin``) against
  transformers' ``CLIPVisionModelWithProjection`` whose random weights that file holds;
- CMMD: cmbench's float64 blocked sums against a float32 numpy transcription of
  google-research/cmmd's ``distance.py`` (whole kernel matrices), on normalised random 768-d rows.

Every figure is seconds per call over ``--repeats`` calls after one untimed warm-up; the ratio is
the peer's median over cmbench's (above 1: cmbench is faster). float32 networks, TF32 off on CUDA.
transformers is imported with torchvision stubbed out (:mod:`cmbench.reference_impls`).

    python benchmarks/feature_networks.py --quick              # 2-block networks, small CMMD: a smoke check
    OMP_NUM_THREADS=2 python benchmarks/feature_networks.py --batch 4 --cmmd-sizes 2000,10000
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from cmbench.features.clip import CLIPExtractor
from cmbench.features.dinov2 import DINOv2Extractor, preprocess
from cmbench.features.inception import full_float32
from cmbench.metrics.cmmd import cmmd
from cmbench.nets.clip_vision import VITL14_336
from cmbench.nets.dinov2 import VITL14, interpolate_pos_embed, official_layout
from cmbench.reference_impls import torchvision_stubbed
from cmbench.threads import choose_threads, parse_threads, using_threads


def timed(fn: Callable[[], object], repeats: int, device: torch.device) -> tuple[list[float], object]:
    """Seconds of each of ``repeats`` calls after one untimed warm-up, and the last result."""
    out = fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return times, out


def dinov2_random_state(config, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the official key layout, scaled so activations stay O(1) (as tests/test_dinov2.py)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in official_layout(config).items():
        x = torch.randn(shape, generator=g)
        if key.endswith(("norm1.weight", "norm2.weight", "norm.weight")):
            state[key] = 1 + 0.2 * x
        elif key.endswith("gamma"):
            state[key] = 0.5 + 0.2 * x
        elif key.endswith(".weight"):
            state[key] = x / math.sqrt(math.prod(shape[1:]))
        else:
            state[key] = 0.1 * x if key.endswith(".bias") else 0.5 * x
    return state


def dinov2_to_transformers(state, depth: int, hf_keys) -> dict[str, torch.Tensor]:
    """The official state dict under transformers' names (tests/test_dinov2.py's mapping)."""
    new_names = "encoder.layer.0.attention.q_proj.weight" in hf_keys  # transformers ≥ 5
    q, k, v, o = ("q_proj", "k_proj", "v_proj", "o_proj") if new_names else (
        "attention.query", "attention.key", "attention.value", "output.dense")
    out = {"embeddings.cls_token": state["cls_token"], "embeddings.mask_token": state["mask_token"],
           "embeddings.patch_embeddings.projection.weight": state["patch_embed.proj.weight"],
           "embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"],
           "layernorm.weight": state["norm.weight"], "layernorm.bias": state["norm.bias"]}
    for i in range(depth):
        a, b = f"blocks.{i}.", f"encoder.layer.{i}."
        for part in ("weight", "bias"):
            for name, tensor in zip((q, k, v), state[a + f"attn.qkv.{part}"].chunk(3)):
                out[b + f"attention.{name}.{part}"] = tensor
            out[b + f"attention.{o}.{part}"] = state[a + f"attn.proj.{part}"]
            for same in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
                out[b + f"{same}.{part}"] = state[a + f"{same}.{part}"]
        out[b + "layer_scale1.lambda1"], out[b + "layer_scale2.lambda1"] = state[a + "ls1.gamma"], state[a + "ls2.gamma"]
    return out


def bench_dinov2(hf, config, args, device, folder: Path) -> list[tuple]:
    state = dinov2_random_state(config)
    torch.save(state, folder / "dinov2_vitl14_pretrain.pth")
    ours = DINOv2Extractor(folder / "dinov2_vitl14_pretrain.pth", expected_sha256=None, config=config,
                           batch_size=args.batch).to(device)
    hf_config = hf.Dinov2Config(
        hidden_size=config.embed_dim, num_hidden_layers=config.depth, num_attention_heads=config.num_heads,
        patch_size=config.patch_size, image_size=224, mlp_ratio=int(config.mlp_ratio),
        layer_norm_eps=config.layer_norm_eps, hidden_act="gelu", qkv_bias=True, layerscale_value=1.0)
    peer = hf.Dinov2Model(hf_config).eval()
    mapped = dinov2_to_transformers(state, config.depth, peer.state_dict().keys())
    grid = 224 // config.patch_size
    mapped["embeddings.position_embeddings"] = interpolate_pos_embed(
        state["pos_embed"], grid, grid, offset=config.interpolate_offset, antialias=config.interpolate_antialias)
    peer.load_state_dict(mapped, strict=True)
    peer.requires_grad_(False).to(device)
    del state, mapped
    images = torch.randint(0, 256, (args.batch, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    pixels = preprocess(images, "torch").to(device)
    with torch.no_grad(), full_float32(device):
        cm_times, cm_out = timed(lambda: ours.net(pixels).cls, args.repeats, device)
        hf_times, hf_out = timed(lambda: peer(pixel_values=pixels).pooler_output, args.repeats, device)
        ex_times, _ = timed(lambda: ours.extract(images, ["dinov2"]), args.repeats, device)
    delta = f"max|Δ| {(cm_out - hf_out).abs().max().item():.1e} of max|x| {hf_out.abs().max().item():.2g}"
    return [(f"DINOv2 ViT-L/14 forward, {args.batch} × 224²", cm_times, hf_times, args.batch, delta),
            (f"DINOv2 extract, {args.batch} uint8 64² (preproc.)", ex_times, None, args.batch, "no peer")]


def bench_clip(hf, config, args, device, folder: Path) -> list[tuple]:
    hf_config = hf.CLIPVisionConfig(
        hidden_size=config.hidden_size, intermediate_size=config.mlp_ratio * config.hidden_size,
        num_hidden_layers=config.layers, num_attention_heads=config.heads, patch_size=config.patch_size,
        image_size=config.image_size, projection_dim=config.projection_dim, hidden_act="quick_gelu", layer_norm_eps=1e-5)
    torch.manual_seed(0)
    peer = hf.CLIPVisionModelWithProjection(hf_config).eval().requires_grad_(False)
    torch.save(peer.state_dict(), folder / "pytorch_model.bin")
    peer.to(device)
    ours = CLIPExtractor(folder / "pytorch_model.bin", expected_sha256=None, config=config).to(device)
    size = config.image_size
    pixels = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(2)).to(device)
    with torch.no_grad(), full_float32(device):
        cm_times, cm_out = timed(lambda: ours.net(pixels), args.repeats, device)
        hf_times, hf_out = timed(lambda: peer(pixel_values=pixels).image_embeds, args.repeats, device)
    delta = f"max|Δ| {(cm_out - hf_out).abs().max().item():.1e} of max|x| {hf_out.abs().max().item():.2g}"
    return [(f"CLIP ViT-L/14@336 forward, {args.batch} × {size}²", cm_times, hf_times, args.batch, delta)]


def distance_py_float32(x: np.ndarray, y: np.ndarray) -> float:
    """google-research/cmmd distance.py ``mmd``, transcribed to numpy: float32, whole matrices."""
    x_sqnorms, y_sqnorms = np.diag(x @ x.T), np.diag(y @ y.T)
    gamma = np.float32(1 / (2 * 10**2))
    k_xx = np.mean(np.exp(-gamma * (-2 * (x @ x.T) + x_sqnorms[:, None] + x_sqnorms[None, :])))
    k_xy = np.mean(np.exp(-gamma * (-2 * (x @ y.T) + x_sqnorms[:, None] + y_sqnorms[None, :])))
    k_yy = np.mean(np.exp(-gamma * (-2 * (y @ y.T) + y_sqnorms[:, None] + y_sqnorms[None, :])))
    return float(1000 * (k_xx + k_yy - 2 * k_xy))


def bench_cmmd(n: int, args, device) -> tuple:
    rng = np.random.default_rng(n)
    real, fake = rng.normal(size=(n, 768)), rng.normal(size=(n, 768)) + 0.05
    real, fake = ((e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32) for e in (real, fake))
    cm_times, cm_value = timed(lambda: cmmd(real, fake, device=device), args.repeats, device)
    np_times, np_value = timed(lambda: distance_py_float32(real, fake), args.repeats, torch.device("cpu"))
    return (f"CMMD {n} × 768 (numpy peer on CPU)", cm_times, np_times, None,
            f"{cm_value:.6f} vs {np_value:.6f}, |Δ| {abs(cm_value - np_value):.1e}")


def print_row(what: str, ours: list[float], peer: list[float] | None, images: int | None, note: str) -> None:
    """One table row: cmbench's and the peer's min and median seconds, the ratio of medians, a note."""
    cells = [f"{min(ours):9.3f}", f"{statistics.median(ours):9.3f}"]
    if peer:
        ratio = statistics.median(peer) / statistics.median(ours)
        cells += [f"{min(peer):9.3f}", f"{statistics.median(peer):9.3f}", f"{ratio:6.2f}x"]
    else:
        cells += [f"{'—':>9}", f"{'—':>9}", f"{'—':>7}"]
    if images:
        rates = [f"{images / statistics.median(t):.2f}" for t in (ours, peer) if t]
        note = f"img/s {' vs '.join(rates)}; {note}"
    print(f"{what:<44} {' '.join(cells)}  {note}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8, help="images per forward (default 8)")
    parser.add_argument("--cmmd-sizes", default="2000,10000", help="rows per set, comma-separated (default 2000,10000)")
    parser.add_argument("--quick", action="store_true", help="2-block networks, batch 2, CMMD at 200 and 500 rows, 1 repeat")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=parse_threads, default="auto", 
                        help="CPU threads: auto (cmbench's choice, OMP_NUM_THREADS wins) or a number")
    args = parser.parse_args()
    dinov2, clip, sizes = VITL14, VITL14_336, [int(n) for n in args.cmmd_sizes.split(",")]
    if args.quick:
        dinov2, clip = replace(VITL14, depth=2), replace(VITL14_336, layers=2)
        args.batch, args.repeats, sizes = 2, 1, [200, 500]
    device = torch.device(args.device)
    threads = choose_threads(args.threads)
    with torchvision_stubbed(dependents=("transformers",)), using_threads(threads.count), \
            tempfile.TemporaryDirectory(prefix="cmbench-featbench-") as folder:
        hf = importlib.import_module("transformers")
        gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
        print(f"{os.cpu_count()} CPUs, {threads.count} threads ({threads.setting}); torch {torch.__version__}, "
              f"transformers {hf.__version__}, numpy {np.__version__}; device {device}{gpu}")
        print(f"{'quick: 2-block networks; ' if args.quick else ''}seconds per call, {args.repeats} repeat(s) after a warm-up; "
              f"ratio = peer median / cmbench median")
        print(f"{'what':<44} {'cm min':>9} {'cm median':>9} {'peer min':>9} {'peer med.':>9} {'ratio':>7}  note")
        for row in bench_dinov2(hf, dinov2, args, device, Path(folder)):
            print_row(*row)
        for row in bench_clip(hf, clip, args, device, Path(folder)):
            print_row(*row)
        for n in sizes:
            print_row(*bench_cmmd(n, args, device))


if __name__ == "__main__":
    main()
