"""mirage: one image and a camera path -> a 3D-consistent video, with a latent spatial memory."""

from __future__ import annotations

import logging

from mirage.errors import InputError, MirageError, ModelError, RuntimeFailure, TrajectoryError

__version__ = "0.1.0"

logging.getLogger("mirage").addHandler(logging.NullHandler())

__all__ = ["__version__", "MirageError", "InputError", "TrajectoryError", "ModelError", "RuntimeFailure"]
