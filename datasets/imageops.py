"""Image decoding and resizing helpers shared by the dataset builders."""

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from PIL import Image

from utils.errors import DatasetNotFoundError


def load_rgb(path: str) -> Image.Image:
    """Open an image file and return it as a fully decoded RGB PIL image."""
    with Image.open(path) as img:
        return img.convert("RGB")


def resize_uint8(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Resize a uint8 [N,C,H,W] batch to [N,C,size,size] with antialiased bilinear filtering."""
    if images.shape[-2:] == (size, size):
        return images
    out = torch.empty((images.shape[0], images.shape[1], size, size), dtype=torch.uint8)
    # Chunked so a 50k-image set never materialises a full float32 copy.
    for start in range(0, images.shape[0], chunk):
        part = images[start:start + chunk].float()
        part = F.interpolate(part, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[start:start + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _decode_one(path: str, size: int) -> torch.Tensor:
    """Decode one file to a uint8 [3,size,size] tensor (squashed, not cropped)."""
    try:
        img = load_rgb(path)
    except OSError as err:
        # A corrupt or unreadable file is a data problem, not a bug: report it as one line.
        raise DatasetNotFoundError(f"cannot read image '{path}': {err}") from None
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    return torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(size, size, 3).permute(2, 0, 1)


def decode_to_tensor(paths: Sequence[str], size: int, workers: int | None = None) -> torch.Tensor:
    """Decode image files into one uint8 [N,3,size,size] tensor, in parallel threads."""
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    if not paths:
        return out
    workers = workers or min(8, os.cpu_count() or 1)

    def fill(i: int) -> None:
        """Decode item i into its slot of the shared output tensor."""
        out[i] = _decode_one(paths[i], size)

    # PIL releases the GIL while decoding, so threads give a real speed-up without pickling images.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(fill, range(len(paths))):
            pass
    return out
