"""modgs-data: times by file name, the split from the file, static-camera safety, depth priors,
and one-line errors for broken scenes."""

import json
import random
import shutil

import numpy as np
import pytest
import torch

from modgs_ns.cli import one_line_errors
from modgs_ns.data.modgs_dataparser import ModgsDataParserConfig
from modgs_ns.data.modgs_dataset import ModgsDataset
from modgs_ns.preprocess.pairs import ensure_caches
from modgs_ns.synth.depth_prior import PriorDistortion  # the dataset gives a depth prior as it is
from modgs_ns.synth.generate import SynthConfig, generate_scene


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("dp") / "scene"
    generate_scene(
        SynthConfig(
            num_frames=6,
            width=48,
            height=36,
            supersample=1,
            num_seed_points=200,
            val_every=3,
            prior=PriorDistortion(kind="depth"),
        ),
        root,
        progress=False,
    )
    return root


def parse(root, split, **kw):
    # As ModgsPipeline (where ns-* commands enter modgs) does it: caches first, typed errors as one line.
    with one_line_errors("modgs-data"):
        ensure_caches(root, progress=False)
        return ModgsDataParserConfig(data=root, **kw).setup().get_dataparser_outputs(split=split)


def test_times_split_and_poses(scene):
    meta = json.loads((scene / "transforms.json").read_text())
    by_name = {f["file_path"].split("/")[-1]: f for f in meta["frames"]}
    for split, n in (("train", 6), ("val", 4), ("test", 12)):
        out = parse(scene, split, test_camera_scale_method="none")
        assert len(out.image_filenames) == n
        names = [p.name for p in out.image_filenames]
        assert all(("train" in x) == (split == "train") for x in names)
        times = out.cameras.times[:, 0].numpy()
        np.testing.assert_allclose(times, [by_name[x]["time"] for x in names], atol=1e-7)
        # No re-orientation, centring or scaling: the poses are the file's.
        c2w = out.cameras.camera_to_worlds.numpy()
        np.testing.assert_allclose(c2w, [np.array(by_name[x]["transform_matrix"])[:3] for x in names], atol=1e-6)


def test_times_follow_file_names_not_frame_order(scene, tmp_path):
    shuffled = tmp_path / "shuffled"
    shutil.copytree(scene, shuffled)
    meta = json.loads((shuffled / "transforms.json").read_text())
    random.Random(0).shuffle(meta["frames"])
    (shuffled / "transforms.json").write_text(json.dumps(meta))
    out = parse(shuffled, "train")
    expect = [int(p.stem.split("_")[-1]) / 5 for p in out.image_filenames]
    np.testing.assert_allclose(out.cameras.times[:, 0].numpy(), expect, atol=1e-7)


def test_seed_points_and_dataset_depth_prior(scene):
    out = parse(scene, "train")
    assert out.metadata["points3D_xyz"].shape[1] == 3 and len(out.metadata["points3D_rgb"]) == len(
        out.metadata["points3D_xyz"]
    )
    ds = ModgsDataset(out)
    item = ds[2]
    prior = np.load(out.metadata["depth_prior_filenames"][2])
    assert item["depth_prior"].shape == (36, 48, 1) and item["depth_valid"].dtype == torch.bool
    np.testing.assert_allclose(item["depth_prior"][..., 0].numpy(), prior)
    # Valid = finite prior minus the ~10% depth-edge pixels the caches mark (MoDGS's non-edge mask).
    frac = float(item["depth_valid"].float().mean())
    assert 0.85 < frac < 0.95, frac
    test_ds = ModgsDataset(parse(scene, "test"))
    assert "depth_prior" not in test_ds[0]  # held-out cameras have no prior


def test_invalid_prior_pixels_are_masked(scene, tmp_path):
    broken = tmp_path / "nan"
    shutil.copytree(scene, broken)
    p = broken / "depth_prior/train_00001.npy"
    d = np.load(p)
    d[:5, :5] = np.nan
    d[-1, -1] = -1
    np.save(p, d)
    ds = ModgsDataset(parse(broken, "train"))
    item = ds[1]
    assert not item["depth_valid"][:5, :5].any() and not item["depth_valid"][-1, -1]
    assert torch.isfinite(item["depth_prior"]).all()


def test_missing_transforms_is_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        parse(tmp_path / "empty", "train")
    err = capsys.readouterr().err.strip()
    assert "transforms.json" in err and len(err.splitlines()) == 1


def test_missing_depth_file_is_one_line_error(scene, tmp_path, capsys):
    broken = tmp_path / "nodepth"
    shutil.copytree(scene, broken)
    (broken / "depth_prior/train_00003.npy").unlink()
    with pytest.raises(SystemExit):
        parse(broken, "train")
    err = capsys.readouterr().err.strip()
    assert "train_00003.npy" in err.replace("\n", "") and "missing depth prior" in err


def test_held_out_cameras_are_placed_at_the_given_scale(scene):
    # Each test camera keeps its orientation and direction from the training camera; its offset
    # from the training camera is multiplied by the scale.
    meta = json.loads((scene / "transforms.json").read_text())
    by_name = {f["file_path"].split("/")[-1]: f for f in meta["frames"]}
    train = {f["time"]: np.array(f["transform_matrix"]) for f in meta["frames"] if f["camera"] == "train"}
    out = parse(scene, "test", test_camera_scale=0.25)
    for name, c2w in zip([p.name for p in out.image_filenames], out.cameras.camera_to_worlds.numpy()):
        f = by_name[name]
        ref, orig = train[f["time"]], np.array(f["transform_matrix"])
        np.testing.assert_allclose(c2w[:3, :3], orig[:3, :3], atol=1e-6)
        np.testing.assert_allclose(c2w[:3, 3] - ref[:3, 3], 0.25 * (orig[:3, 3] - ref[:3, 3]), atol=1e-5)
        assert np.linalg.norm(orig[:3, 3] - ref[:3, 3]) > 0.1


def test_parser_reports_time_so_the_viewer_shows_the_slider(scene):
    # nerfstudio's datamanager copies the parser's includes_time; the viewer shows "Time" only then.
    assert ModgsDataParserConfig(data=scene).setup().includes_time is True
