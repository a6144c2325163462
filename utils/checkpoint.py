"""Atomic checkpoint I/O: write to a temp file in the same folder, then rename; checkpoints carry a
checksum of their payload, verified on load."""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from utils.errors import UserError


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def replace_from_temp(path: str | Path, write: Callable[[str], None]) -> None:
    """Call `write(tmp_path)` on a temp file beside `path`, then rename it over `path`.

    Readers see either the old file or the complete new one; a failed write leaves no temp file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _umask_mode())  # mkstemp files are private; artifacts are not
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save `obj` so that `path` is either the old file or the complete new one."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
    replace_from_temp(path, write)


# A checked file: MAGIC, the SHA-256 of the payload, the payload (torch.save bytes). Any damaged
# byte fails the magic, the digest or the comparison of the two.
MAGIC = b"dha-search checkpoint\n"
DIGEST_BYTES = 32


def atomic_save_checked(obj: Any, path: str | Path) -> None:
    """torch.save `obj` behind a checksum header, atomically (`load_checkpoint` verifies it)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    payload = buffer.getvalue()

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(MAGIC + hashlib.sha256(payload).digest())
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
    replace_from_temp(path, write)


def atomic_write_text(text: str, path: str | Path) -> None:
    """Write a text file atomically (JSON artifacts)."""
    replace_from_temp(path, lambda tmp: Path(tmp).write_text(text))


def _payload(path: Path) -> io.BytesIO:
    """The verified payload of a checked file, or the whole file of an unchecked one (older formats)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read checkpoint '{path}': {exc.strerror or exc}") from None
    if not raw.startswith(MAGIC):
        return io.BytesIO(raw)
    digest, payload = raw[len(MAGIC):len(MAGIC) + DIGEST_BYTES], raw[len(MAGIC) + DIGEST_BYTES:]
    if hashlib.sha256(payload).digest() != digest:
        raise UserError(f"checkpoint '{path}' is damaged: its checksum does not match its contents")
    return io.BytesIO(payload)


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """Load a checkpoint written by `atomic_save_checked` (checksum verified) or `atomic_save`;
    a missing, damaged or foreign file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at '{path}'")
    try:
        # weights_only: tensors and plain containers only, so a checkpoint cannot run code on load
        blob = torch.load(_payload(path), map_location=map_location, weights_only=True)
    except UserError:
        raise
    except Exception as exc:  # torch raises several types for truncated/garbled files
        raise UserError(f"checkpoint '{path}' is corrupted or unreadable ({type(exc).__name__})") from None
    if not isinstance(blob, dict) or "format" not in blob:
        raise UserError(f"'{path}' is not a checkpoint written by this tool")
    return blob
