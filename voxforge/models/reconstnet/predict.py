"""Point clouds from images with a trained reconstnet run: one cloud per image (the network is single-view).

Each image goes in as ``pipeline eval`` gives a dataset's views to the network: RGBA over the test
background colour, a square render of at most 137 px (3D-R2N2's size) as it is, centre-cropped to the
run's ``image_size`` when larger; anything else padded to a square and resized to ``image_size``
(:func:`voxforge.models.r2n2.predict.load_view`). The cloud comes out in the run's target frame: the object frame
(bounding box centred at the origin, unit diagonal, +Y up) or, for ``--frame view`` runs, the input
camera's frame (OpenCV: +X right, +Y down, +Z forward, origin at the object's centre).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def network_input(path: str | Path, image_size: int) -> np.ndarray:
    """(S, S, 3) uint8: the image as the network sees a dataset view in evaluation (module docstring)."""
    from PIL import Image

    from voxforge.models.data import crop_views
    from voxforge.models.r2n2.predict import R2N2_RENDER_SIZE, load_view

    with Image.open(path) as opened:
        width, height = opened.size
    if width == height and width <= max(image_size, R2N2_RENDER_SIZE):
        return np.array(crop_views(load_view(path, width)[None], image_size, rng=None)[0])  # writable, for torch
    return np.array(load_view(path, image_size))


def predict(run_dir: str | Path, images: list[str | Path], out: str | Path, device: str | None = None) -> dict:
    """Write ``out/<image stem>.ply`` (the points, binary PLY) and ``.npy`` ((N, 3) float32) for each image.

    Returns ``{"views", "points", "frame", "files": {image name: ply path}}``. Raises ValueError without
    images, FileNotFoundError for a missing run or image."""
    import torch
    import trimesh

    from voxforge.models.reconstnet.train import load_run

    if not images:
        raise ValueError("give at least one image")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, config, _ = load_run(run_dir, device)
    model.eval()
    clouds = []
    for path in images:  # one at a time: the images may differ in size
        view = torch.from_numpy(network_input(path, config.image_size)[None]).permute(0, 3, 1, 2)
        with torch.no_grad():
            clouds.append(model(view.float().div(255.0).to(device))["points"][0].float().cpu().numpy())
    clouds = np.stack(clouds)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for path, points in zip(images, clouds):
        target = out / f"{Path(path).stem}.ply"
        for suffix, write in ((".npy", lambda t: np.save(t, points)),
                              (".ply", lambda t: trimesh.PointCloud(points).export(t, file_type="ply"))):
            final = target.with_suffix(suffix)
            temporary = final.with_name(final.name + ".partial")
            with open(temporary, "wb") as handle:
                write(handle)
            temporary.replace(final)
        written[Path(path).name] = target
    return {"views": len(images), "points": int(clouds.shape[1]), "frame": config.frame, "files": written}
