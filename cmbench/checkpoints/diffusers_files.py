"""Where a diffusers ``UNet2DModel`` lives in a folder that ``save_pretrained`` wrote.

A pipeline folder (``model_index.json``, ``unet/``, ``scheduler/``) keeps the network in
``unet/``; a model saved on its own is that ``unet`` folder. Either holds ``config.json`` and one
weights file, ``diffusion_pytorch_model.safetensors`` (preferred, as diffusers prefers it) or
``diffusion_pytorch_model.bin``. Sharded weights (``*.index.json``) and variants
(``diffusion_pytorch_model.fp16.safetensors``) are not read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG_NAME = "config.json"
WEIGHTS_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


@dataclass(frozen=True)
class DiffusersUNetFiles:
    """The ``unet`` folder and the two files cmbench reads from it."""

    folder: Path
    config: Path
    weights: Path


def locate_diffusers_unet(folder: Path) -> DiffusersUNetFiles:
    """The files of the UNet in ``folder`` (a pipeline folder or the ``unet`` folder itself).

    Raises FileNotFoundError naming the folder and what it lacks, and ValueError for a file
    where a folder was expected or for sharded weights.
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"diffusers checkpoint folder {folder} does not exist")
    if not folder.is_dir():
        raise ValueError(f"{folder} is a file; format diffusers reads a folder as save_pretrained writes it "
                         f"(a pipeline folder with unet/, or the unet folder with {CONFIG_NAME})")
    unet = folder / "unet" if (folder / "unet" / CONFIG_NAME).is_file() else folder
    config = unet / CONFIG_NAME
    if not config.is_file():
        raise FileNotFoundError(f"{folder} has no {CONFIG_NAME} (nor unet/{CONFIG_NAME}); format diffusers reads a "
                                f"folder as save_pretrained writes it (a pipeline folder with unet/, or the unet folder)")
    for name in WEIGHTS_NAMES:
        if (unet / name).is_file():
            return DiffusersUNetFiles(unet, config, unet / name)
    if any((unet / f"{name}.index.json").is_file() for name in WEIGHTS_NAMES):
        raise ValueError(f"{unet} holds sharded weights ({WEIGHTS_NAMES[0]}.index.json or .bin.index.json); cmbench "
                         f"reads a single {' or '.join(WEIGHTS_NAMES)}")
    present = sorted(p.name for p in unet.iterdir() if p.name.startswith("diffusion_pytorch_model"))
    raise FileNotFoundError(f"{unet} has {CONFIG_NAME} but no weights file; expected {' or '.join(WEIGHTS_NAMES)}"
                            + (f" (found {', '.join(present)}; variants are not read)" if present else ""))


def find_diffusers_unet(folder: Path) -> DiffusersUNetFiles | None:
    """:func:`locate_diffusers_unet`, or None where ``folder`` is not a readable diffusers folder."""
    try:
        return locate_diffusers_unet(folder)
    except (FileNotFoundError, ValueError):
        return None
