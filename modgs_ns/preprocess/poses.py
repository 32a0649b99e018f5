"""Camera poses of a video's frames: static, given, structure from motion, or rotation only.

The released MoDGS code knows one case, a static camera (identity poses). Casual videos move, so:
- `colmap`: incremental SfM with pycolmap (CPU SIFT, sequential matching, intrinsics fixed to ours),
  dynamic regions kept out of feature extraction where a mask is known;
- `rotation`: a camera that turns on the spot (or SfM without parallax): frame-to-frame rotations
  from SIFT matches (homography inliers, then Kabsch on their viewing rays), chained; no translation;
- `given`: poses from a transforms.json (ns-process-data), used as they are.

All poses returned here are nerfstudio camera-to-world matrices (OpenGL axes: x right, y up, -z forward).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from modgs_ns.scene.errors import PreprocessError
from modgs_ns.scene.features import sift_matches
from modgs_ns.scene.geometry import CV_TO_GL


class PoseError(PreprocessError):
    """Poses could not be estimated (the message says why and what to try)."""


# ----------------------------------------------------------------------------- structure from motion
def colmap_poses(
    images: Sequence[np.ndarray],
    K: np.ndarray,
    dynamic_masks: Optional[Sequence[np.ndarray]] = None,
    overlap: int = 10,
    workdir: Optional[Path] = None,
    min_side: int = 480,
) -> np.ndarray:
    """c2w [T,4,4] from pycolmap's incremental mapper; PoseError unless every frame ends up in one
    model. Intrinsics are fixed (PINHOLE, not refined): the scene's K
    is the one training uses. `dynamic_masks` (True = moving) are written as COLMAP masks."""
    try:
        import pycolmap
    except ImportError as err:
        raise PreprocessError("--poses colmap needs pycolmap: pip install 'modgs-ns[sfm]' (or pycolmap)") from err
    pycolmap.logging.minloglevel = 2  # it logs every mapper step at INFO on stderr
    T = len(images)
    if T < 3:  # bad input, not a failure a fallback should hide
        raise PreprocessError(f"structure from motion needs at least 3 frames, got {T}")
    tmp = Path(tempfile.mkdtemp(prefix="modgs-sfm-", dir=workdir))
    try:
        img_dir, mask_dir, db = tmp / "images", tmp / "masks", tmp / "database.db"
        img_dir.mkdir()
        names = [f"{k:05d}.png" for k in range(T)]
        # Small frames give SIFT few, coarse keypoints: SfM runs on frames upsampled to a shorter
        # side of at least `min_side` px (K scaled with them; poses do not depend on it). Measured:
        # the orbiting 240x180 scene's rotation error is 0.67 deg as is, 0.25 at 480, 0.17 at 720;
        # but 720 broke the real castel sequence (480x360 frames), which 480 keeps intact.
        h, w = images[0].shape[:2]
        up = max(1.0, min_side / min(h, w))
        size = (int(round(w * up)), int(round(h * up)))
        Ks = K.copy()
        Ks[:2] *= np.array([[size[0] / w], [size[1] / h]])
        for n, im in zip(names, images):
            im = cv2.resize(im, size, interpolation=cv2.INTER_CUBIC) if up > 1 else im
            cv2.imwrite(str(img_dir / n), cv2.cvtColor(im, cv2.COLOR_RGB2BGR) if im.ndim == 3 else im)
        reader = pycolmap.ImageReaderOptions()
        reader.camera_model = "PINHOLE"
        reader.camera_params = ",".join(f"{v:.6f}" for v in (Ks[0, 0], Ks[1, 1], Ks[0, 2], Ks[1, 2]))
        if dynamic_masks is not None:
            mask_dir.mkdir()
            for n, m in zip(names, dynamic_masks):  # COLMAP: features where the mask is non-zero
                m = cv2.resize(m.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
                cv2.imwrite(str(mask_dir / f"{n}.png"), np.where(m, 0, 255).astype(np.uint8))
            reader.mask_path = str(mask_dir)
        extraction = pycolmap.FeatureExtractionOptions()
        extraction.use_gpu = False
        extraction.num_threads = 1  # with more threads the mapper's result varies from run to run
        pycolmap.extract_features(
            db,
            img_dir,
            camera_mode=pycolmap.CameraMode.SINGLE,
            reader_options=reader,
            extraction_options=extraction,
            device=pycolmap.Device.cpu,
        )
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap = overlap
        pairing.num_threads = 1
        matching = pycolmap.FeatureMatchingOptions()
        matching.num_threads = 1
        matching.use_gpu = False
        pycolmap.match_sequential(db, matching_options=matching, pairing_options=pairing, device=pycolmap.Device.cpu)
        opts = pycolmap.IncrementalPipelineOptions()
        opts.ba_refine_focal_length = False
        opts.ba_refine_principal_point = False
        opts.ba_refine_extra_params = False
        opts.num_threads = 1
        # A casual video's camera moves little: COLMAP's default initial-pair angle (16 deg) is for
        # photo collections (4 deg measured best on the orbiting scene). Other seeds are tried if a
        # frame is left out.
        opts.mapper.init_min_tri_angle = 4.0
        best, n_reg = None, 0
        for attempt in range(3):
            opts.random_seed = attempt
            (tmp / "sparse").mkdir(exist_ok=True)
            models = pycolmap.incremental_mapping(db, img_dir, tmp / "sparse", options=opts)
            cand = max(models.values(), key=lambda r: r.num_reg_images(), default=None)
            if cand is not None and cand.num_reg_images() > n_reg:
                best, n_reg = cand, cand.num_reg_images()
            if n_reg == T:
                break
            shutil.rmtree(tmp / "sparse", ignore_errors=True)
        if n_reg < T:
            raise PoseError(
                f"structure from motion registered {n_reg} of {T} frames (too little parallax, "
                "too few features or too much motion); try --poses rotation for a camera that only turns"
            )
        c2w = np.zeros((T, 4, 4))
        by_name = {im.name: im for im in best.images.values()}
        for k, n in enumerate(names):
            pose = by_name[n].cam_from_world
            pose = pose() if callable(pose) else pose
            w2c = np.eye(4)
            w2c[:3, :4] = pose.matrix()
            c2w[k] = np.linalg.inv(w2c) @ CV_TO_GL
        return c2w
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------- rotation only
def relative_rotation(
    img_a: np.ndarray, img_b: np.ndarray, K: np.ndarray, mask_a: Optional[np.ndarray] = None, min_inliers: int = 20
) -> tuple[np.ndarray, int]:
    """R_ba (camera a -> camera b coordinates, OpenCV axes) of a purely rotating camera from SIFT
    matches (mask_a: True where features may be used), and the number of matches it rests on."""
    pa, pb = sift_matches(img_a, img_b, mask_a)
    if len(pa) < min_inliers:
        raise PoseError(f"too few feature matches for a rotation estimate ({len(pa)})")
    pa, pb = pa.astype(np.float32), pb.astype(np.float32)
    H, inl = cv2.findHomography(pa, pb, cv2.RANSAC, 2.0)
    if H is None or int(inl.sum()) < min_inliers:
        raise PoseError("no consistent homography between neighbouring frames")
    # K^-1 H K is a rotation only up to noise, and its perspective terms are ill-conditioned for a
    # small rotation; so the homography only picks the inliers, and R is the rotation that best maps
    # their viewing rays (Kabsch on unit bearing vectors: 3 degrees of freedom, not 8).
    keep = inl.ravel().astype(bool)
    Kinv = np.linalg.inv(K)

    def rays(p):
        r = np.c_[p + 0.5, np.ones(len(p))] @ Kinv.T  # keypoints have pixel centres at integers
        return r / np.linalg.norm(r, axis=1, keepdims=True)

    a, b = rays(pa[keep]), rays(pb[keep])
    u, _, vt = np.linalg.svd(b.T @ a)
    R = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
    return R, int(keep.sum())


def rotation_poses(
    images: Sequence[np.ndarray], K: np.ndarray, static_masks: Optional[Sequence[np.ndarray]] = None, reference: int = 0
) -> np.ndarray:
    """c2w [T,4,4] of a camera turning about its centre: chained frame-to-frame rotations, the
    reference frame's pose the identity (as a static camera's), every centre at the origin."""
    T = len(images)
    if T < 2:
        raise PoseError(f"rotation estimate needs at least 2 frames, got {T}")
    c2w_cv = [None] * T
    c2w_cv[reference] = np.eye(3)
    order = list(range(reference + 1, T)) + list(range(reference - 1, -1, -1))
    for k in order:
        j = k - 1 if k > reference else k + 1  # the neighbour already placed
        R_kj, _ = relative_rotation(images[j], images[k], K, None if static_masks is None else static_masks[j])
        c2w_cv[k] = c2w_cv[j] @ R_kj.T  # x_k = R_kj x_j  =>  world_from_k = world_from_j R_kj^T
    out = np.tile(np.eye(4), (T, 1, 1))
    for k in range(T):
        out[k, :3, :3] = c2w_cv[k]
    # World axes = the reference camera's OpenGL axes, so that camera's pose is the identity.
    return CV_TO_GL @ out @ CV_TO_GL
