"""Checkpoint loaders and content hashes.

- ``native``: cmbench's own format (plain data, loaded with ``weights_only=True``).
- ``state_dict``: the official PyTorch state dicts of openai/consistency_models and sony/ctm,
  loaded strictly into an architecture preset (``official``).
- ``edm_pickle``: NVlabs/edm ``.pkl`` snapshots, rebuilt by a restricted unpickler that never runs
  the code they embed.
- ``diffusers``: folders as diffusers' ``save_pretrained`` writes them (``UNet2DModel``), mapped onto
  cmbench's ADM net without importing diffusers (``diffusers_unet``; safetensors read by
  ``safetensors_file``).
- ``flax``: the flax msgpack training states of openai/consistency_models_cifar10, read without JAX
  or flax (``flax_msgpack``); their ``params_ema`` tree is mapped strictly onto cmbench's NCSN++
  port (``flax_ncsnpp``).
"""

from cmbench.checkpoints.hashing import sha256_file
from cmbench.checkpoints.native import FORMAT, NativeCheckpoint, load_native, save_native

__all__ = ["FORMAT", "NativeCheckpoint", "load_native", "save_native", "sha256_file"]
