"""What the dataparser hands the model about the scene (through nerfstudio's `metadata`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np


@dataclass(frozen=True)
class SceneInfo:
    """The training split's scene: where it lives, its prior, frame times and the depth points' bounds."""

    root: Path
    """The scene folder."""
    prior_kind: str
    """"metric_depth", "relative_depth" or "disparity" (scene/format.py `prior_kind`)."""
    frame_times: Tuple[float, ...]
    """Training frames' times, in the dataset's order."""
    bounds: Optional[np.ndarray] = None
    """[2,3] min / max of the valid aligned-depth points (world units); None without caches."""
