"""Run logging: console + log.txt, metrics.jsonl, and TensorBoard scalars/text."""
from __future__ import annotations

import json
import struct
import sys
import time
from pathlib import Path
from typing import Any


class RunLogger:
    """Writes to the run folder; with `run_dir=None` it only prints (dry runs, tests)."""

    def __init__(self, run_dir: Path | None, tensorboard: bool = True, quiet: bool = False):
        self.run_dir = run_dir
        self.quiet = quiet
        self.writer = None
        self._log = None
        self._jsonl = None
        if run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            self._log = open(run_dir / "log.txt", "a")
            self._jsonl = open(run_dir / "metrics.jsonl", "a")
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError:  # tensorboard is optional at run time
                    SummaryWriter = None
                if SummaryWriter is not None:
                    self.writer = SummaryWriter(log_dir=str(run_dir))

    def info(self, message: str) -> None:
        """A human-readable line on stdout and in log.txt."""
        line = f"{time.strftime('%H:%M:%S')} {message}"
        if not self.quiet:
            print(line, flush=True)
        if self._log:
            self._log.write(line + "\n")
            self._log.flush()

    def record(self, **fields: Any) -> None:
        """One JSON line in metrics.jsonl."""
        if self._jsonl:
            self._jsonl.write(json.dumps(fields, default=float) + "\n")
            self._jsonl.flush()

    def scalars(self, values: dict[str, float], step: int) -> None:
        """TensorBoard scalars under their tags."""
        if self.writer:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)

    def image(self, tag: str, image, step: int) -> None:
        """TensorBoard image [C, H, W] in [0, 1] (policy matrices, augmented samples)."""
        if self.writer:
            self.writer.add_image(tag, image, step)

    def text(self, tag: str, text: str, step: int) -> None:
        """TensorBoard text (genotypes)."""
        if self.writer:
            self.writer.add_text(tag, text, step)

    def close(self) -> None:
        """Flush and close every file."""
        if self.writer:
            self.writer.close()
        for f in (self._log, self._jsonl):
            if f:
                f.close()


def progress_enabled(requested: bool) -> bool:
    """Progress bars only when asked for and stderr is a terminal."""
    return requested and sys.stderr.isatty()


def _event_records(data: bytes):
    """(raw record, event bytes) of a TensorBoard events file's complete records (TFRecord framing:
    length u64, its crc u32, data, crc u32); a tail cut short by a kill is left out."""
    offset = 0
    while offset + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        end = offset + 12 + length + 4
        if end > len(data):
            return
        yield data[offset:end], data[offset + 12:offset + 12 + length]
        offset = end


def read_events(path: Path) -> list:
    """The Event protos of one TensorBoard events file ([] without tensorboard)."""
    try:
        from tensorboard.compat.proto.event_pb2 import Event
    except ImportError:
        return []
    return [Event.FromString(event) for _, event in _event_records(path.read_bytes())]


def trim_events(run_dir: Path, until: float) -> None:
    """Drop the TensorBoard events written after wall time `until` (when the checkpoint a resume
    starts from was taken): their steps run again, and TensorBoard would show them twice."""
    try:
        from tensorboard.compat.proto.event_pb2 import Event
    except ImportError:
        return
    from utils.checkpoint import replace_from_temp
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        kept = [raw for raw, event in _event_records(data) if Event.FromString(event).wall_time <= until]
        if sum(map(len, kept)) != len(data):
            replace_from_temp(path, lambda tmp: Path(tmp).write_bytes(b"".join(kept)))
