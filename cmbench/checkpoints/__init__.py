"""Checkpoint loaders and content hashes.

``native`` is cmbench's own format (plain data, loaded with ``weights_only=True``).
"""

from cmbench.checkpoints.hashing import sha256_file
from cmbench.checkpoints.native import FORMAT, NativeCheckpoint, load_native, save_native

__all__ = ["FORMAT", "NativeCheckpoint", "load_native", "save_native", "sha256_file"]
