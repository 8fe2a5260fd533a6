"""Camera conventions, and the pyrender backend honouring them pixel for pixel."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from voxforge.renderers import get_renderer, sample_lighting
from voxforge.renderers.backgrounds import BackgroundPool, composite, list_background_images
from voxforge.renderers.base import unpremultiply
from voxforge.renderers.cameras import (
    CameraRanges, camera_position, intrinsics, look_at, min_distance_in_frame, project, sample_cameras,
)


def test_look_at_is_a_rigid_opencv_pose():
    eye = camera_position(30.0, 25.0, 1.5)
    pose = look_at(eye)
    rotation = pose[:, :3]
    assert np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    assert np.isclose(np.linalg.det(rotation), 1.0)
    assert np.allclose(rotation @ eye + pose[:, 3], 0, atol=1e-12)  # the camera centre maps to the origin
    origin_in_camera = pose[:, 3]
    assert np.allclose(origin_in_camera[:2], 0, atol=1e-12) and np.isclose(origin_in_camera[2], 1.5)
    # world up (+Y) points up in the image, i.e. towards smaller row numbers
    pixels, _ = project(np.array([[0.0, 0.1, 0.0]]), intrinsics(127, 2.1875), pose)
    assert pixels[0, 1] < 63.0


def test_origin_projects_to_the_image_centre_and_focal_matches_r2n2():
    K = intrinsics(127, 2.1875)
    assert K[0, 2] == K[1, 2] == 63.0
    assert np.isclose(np.degrees(2 * np.arctan(1 / 2.1875)), 49.1, atol=0.1)
    pixels, depth = project(np.zeros((1, 3)), K, look_at(camera_position(123.0, 27.0, 1.3)))
    assert np.allclose(pixels, 63.0) and np.isclose(depth, 1.3)


def test_sampled_cameras_keep_the_object_in_frame():
    rng = np.random.default_rng(0)
    cameras = sample_cameras(200, 127, rng, CameraRanges(), object_radius=0.5)
    assert cameras.K.shape == (200, 3, 3) and cameras.world_to_camera.shape == (200, 3, 4)
    assert (cameras.elevation >= 25).all() and (cameras.elevation <= 30).all()
    assert (cameras.distance >= min_distance_in_frame(0.5, 2.1875, 127)).all()
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.5).vertices
    for K, pose in zip(cameras.K, cameras.world_to_camera):
        pixels, depth = project(sphere, K, pose)
        assert (depth > 0).all() and (pixels >= 0).all() and (pixels <= 126).all()


def test_same_seed_same_cameras():
    a = sample_cameras(5, 127, np.random.default_rng(7))
    b = sample_cameras(5, 127, np.random.default_rng(7))
    assert np.array_equal(a.world_to_camera, b.world_to_camera)


@pytest.fixture(scope="module")
def renderer():
    pyrender_renderer = get_renderer("pyrender")(127)
    yield pyrender_renderer
    pyrender_renderer.close()


def test_pyrender_silhouette_matches_the_projection(renderer):
    """A small sphere off-centre must appear exactly where K and world_to_camera put it."""
    centre = np.array([0.2, -0.1, 0.15])
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.06)
    sphere.apply_translation(centre)
    cameras = sample_cameras(4, 127, np.random.default_rng(3))
    result = renderer.render(trimesh.Scene(sphere), cameras, sample_lighting(4, np.random.default_rng(3)))
    assert result.color.shape == (4, 127, 127, 3) and result.alpha.shape == (4, 127, 127)
    rows, columns = np.mgrid[:127, :127]
    for view in range(4):
        weights = result.alpha[view].astype(float)
        centroid = np.array([(columns * weights).sum(), (rows * weights).sum()]) / weights.sum()
        expected, depth = project(centre[None], cameras.K[view], cameras.world_to_camera[view])
        assert np.abs(centroid - expected[0]).max() < 0.25  # sub-pixel agreement
        hit = result.depth[view][result.alpha[view] == 255]
        assert np.all(np.abs(hit - depth[0]) < 0.07)  # depth is camera z of the surface


def test_pyrender_colour_is_straight_alpha(renderer):
    """Edges keep the object's colour (not darkened by premultiplication)."""
    box = trimesh.creation.box(extents=[0.5, 0.5, 0.5])
    box.visual.face_colors = [200, 40, 40, 255]
    cameras = sample_cameras(2, 127, np.random.default_rng(1))
    result = renderer.render(trimesh.Scene(box), cameras, sample_lighting(2, np.random.default_rng(1)))
    alpha = result.alpha
    interior = result.color[alpha == 255].astype(float)
    edge = result.color[(alpha > 40) & (alpha < 200)].astype(float)
    assert len(edge) > 20
    assert edge[:, 0].mean() > 0.7 * interior[:, 0].mean()


def test_unpremultiply_and_composite_leave_no_dark_fringe():
    premultiplied = np.array([[[100, 50, 0]]], np.uint8)
    alpha = np.array([[128]], np.uint8)
    straight = unpremultiply(premultiplied, alpha)
    assert np.allclose(straight[0, 0], [199, 100, 0], atol=1)
    white = np.full((1, 1, 3), 255, np.uint8)
    out = composite(straight, alpha, white)
    assert np.allclose(out[0, 0], [100 + 127, 50 + 127, 127], atol=2)


def test_background_crops_from_real_voc_photos(shared_data):
    photos = list_background_images(shared_data / "voc" / "VOC2007" / "JPEGImages")
    pool = BackgroundPool(photos)
    a = pool.sample(127, np.random.default_rng(0))
    b = pool.sample(127, np.random.default_rng(0))
    assert a.shape == (127, 127, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert a.std() > 10  # a photo, not a flat colour


def test_background_pool_drops_unreadable_photos(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    pool = BackgroundPool(list_background_images(tmp_path), color=(10, 20, 30))
    assert (pool.sample(32, np.random.default_rng(0)) == [10, 20, 30]).all()
