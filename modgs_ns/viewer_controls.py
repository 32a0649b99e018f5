"""A viewer button that puts the viewer's camera at the training camera.

A casually captured video has one (static) training camera, and viser's default view looks at the
origin from an arbitrary corner; this button gives the view MoDGS renders from. nerfstudio 1.1.5's
ViewerControl.set_pose is not implemented, so the callback sets each connected client's camera
directly, as the viewer does when a training-camera frustum is clicked (viewer.py:475-484).
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
from nerfstudio.viewer.viewer_elements import ViewerButton, ViewerControl

VISER_NERFSTUDIO_SCALE_RATIO = 10.0  # nerfstudio.viewer.viewer.VISER_NERFSTUDIO_SCALE_RATIO


class TrainCameraView:
    """Holds the ViewerControl (set up by the viewer) and the button; `c2w_fn` gives a 3x4 pose."""

    def __init__(self, c2w_fn: Callable[[], np.ndarray], fov: Optional[float] = None):
        self.c2w_fn = c2w_fn
        self.fov = fov  # vertical, radians; None keeps the viewer's
        self.control = ViewerControl()
        self.button = ViewerButton("View from the training camera", cb_hook=lambda _: self.apply())

    def apply(self) -> None:
        import viser.transforms as vtf

        server = getattr(self.control, "viser_server", None)
        if server is None:
            return
        c2w = np.asarray(self.c2w_fn(), dtype=np.float64)
        # The same conversion the viewer uses for its camera frustums (OpenGL -> viser camera axes).
        R = vtf.SO3.from_matrix(c2w[:3, :3]) @ vtf.SO3.from_x_radians(np.pi)
        for client in server.get_clients().values():
            with client.atomic():
                client.camera.wxyz = R.wxyz
                client.camera.position = c2w[:3, 3] * VISER_NERFSTUDIO_SCALE_RATIO
                if self.fov is not None:
                    client.camera.fov = self.fov
