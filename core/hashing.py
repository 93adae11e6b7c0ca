"""File hashing shared by the modules that fingerprint bytes on disk (uploaded PDFs, model weights,
exported ONNX files): read in 1 MiB blocks, so a large file never sits in memory at once."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

BLOCK = 1 << 20


def update_from_file(digest: Any, path: str | Path) -> Any:
    """Feed the bytes of ``path`` into ``digest`` (a ``hashlib`` object); returns it."""
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(BLOCK), b""):
            digest.update(block)
    return digest


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of the bytes of ``path``."""
    return update_from_file(hashlib.sha256(), path).hexdigest()
