"""Renamed :mod:`core.launch` (what the dashboard launches); kept so old imports still work."""

from .launch import *  # noqa: F401,F403
from .launch import (  # noqa: F401  (names a star import skips)
    SystemSpec,
    _chunking_args,
    _embedder,
)
