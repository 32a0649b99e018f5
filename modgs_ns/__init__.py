"""modgs-ns: MoDGS as a nerfstudio plugin.

Every ns-* command imports this package (through the plugin entry points) before it loads a
checkpoint, so the torch>=2.6 `weights_only` shim lives here: nerfstudio 1.1.5 checkpoints hold
numpy scalars (scheduler state) that the safe unpickler rejects (nerfstudio issue #3683).
"""

import numpy as _np
import torch as _torch


def _allow_numpy_in_checkpoints() -> None:
    add = getattr(_torch.serialization, "add_safe_globals", None)
    if add is None:
        return
    safe = [_np.dtype, type(_np.dtype(_np.float64)), type(_np.dtype(_np.float32)), type(_np.dtype(_np.int64))]
    for mod_name in ("numpy.core.multiarray", "numpy._core.multiarray"):
        try:
            mod = __import__(mod_name, fromlist=["scalar"])
            safe.append(mod.scalar)
        except (ImportError, AttributeError):
            pass
    add(safe)


_allow_numpy_in_checkpoints()
