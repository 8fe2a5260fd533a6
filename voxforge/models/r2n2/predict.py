"""Reconstruct one object from a few photos or renders with a trained run: voxels (binvox) and a mesh.

The prediction lives in the normalized grid cube the model was trained on: the object's longest
extent spans the cube [-0.5, 0.5]^3, +Y up (voxforge's object frame). The mesh is made of the exposed
faces of the occupied voxels (no smoothing), so it shows exactly what the grid says. It is closed, but not
always watertight in trimesh's sense: where two voxels touch only along an edge, four faces share that
edge; :func:`predict` reports whether the mesh it wrote is watertight.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

R2N2_RENDER_SIZE = 137  # 3D-R2N2's renders; the network sees their centre 127 x 127


def load_view(path: str | Path, size: int = 127) -> np.ndarray:
    """An image file as (size, size, 3) uint8: RGBA over the test background colour, 137-pixel renders
    centre-cropped as in evaluation, anything else padded to a square with that colour and resized."""
    from PIL import Image

    from voxforge.models.r2n2.train import TEST_BACKGROUND

    with Image.open(path) as opened:
        image = opened.convert("RGBA")
    width, height = image.size
    if width == height and size < width <= R2N2_RENDER_SIZE:
        margin = (width - size) // 2
        image = image.crop((margin, margin, margin + size, margin + size))
    background = Image.new("RGBA", image.size, (int(TEST_BACKGROUND),) * 3 + (255,))
    flat = Image.alpha_composite(background, image).convert("RGB")
    if flat.size != (size, size):
        side = max(flat.size)
        square = Image.new("RGB", (side, side), (int(TEST_BACKGROUND),) * 3)
        square.paste(flat, ((side - flat.size[0]) // 2, (side - flat.size[1]) // 2))
        flat = square.resize((size, size), Image.BILINEAR)
    return np.asarray(flat, np.uint8)


def cube_mesh(occupancy: np.ndarray, origin, voxel_size: float):
    """A trimesh of the occupied voxels' exposed faces (two triangles each, outward normals)."""
    import trimesh

    grid = np.asarray(occupancy, bool)
    padded = np.pad(grid, 1)
    vertices, faces = [], []
    offset = 0
    for axis in range(3):
        for direction in (-1, 1):
            shifted = np.roll(padded, -direction, axis=axis)[1:-1, 1:-1, 1:-1]
            cells = np.argwhere(grid & ~shifted)
            if not len(cells):
                continue
            # the face's square: fixed coordinate on `axis`, spanning the other two
            u, v = [a for a in range(3) if a != axis]
            corners = np.zeros((4, 3))
            corners[:, axis] = 1.0 if direction > 0 else 0.0
            corners[:, u] = [0, 1, 1, 0]
            corners[:, v] = [0, 0, 1, 1]
            quads = cells[:, None, :] + corners[None]  # (N, 4, 3)
            vertices.append(quads.reshape(-1, 3))
            base = offset + 4 * np.arange(len(cells))[:, None]
            # (u, v, axis) right-handed: counter-clockwise seen from +axis faces outward for +direction
            order = np.array([[0, 1, 2], [0, 2, 3]]) if (direction > 0) == ((v - u) % 3 == 1) else \
                np.array([[0, 2, 1], [0, 3, 2]])
            faces.append((base[:, None, :] + order[None]).reshape(-1, 3))
            offset += 4 * len(cells)
    if not vertices:
        return trimesh.Trimesh()
    mesh = trimesh.Trimesh(np.concatenate(vertices) * voxel_size + np.asarray(origin, float),
                           np.concatenate(faces), process=True)
    mesh.merge_vertices()
    return mesh


def _write_atomic(path: Path, write) -> Path:
    """``write(handle)`` into ``path.partial``, then rename: never a half-written file under the name."""
    temporary = path.with_name(path.name + ".partial")
    with open(temporary, "wb") as handle:
        write(handle)
    temporary.replace(path)
    return path


def predict(run_dir: str | Path, images: list[str | Path], out: str | Path, threshold: float = 0.4,
            device: str | None = None) -> dict:
    """Views -> ``out/prediction.binvox``, ``out/prediction.obj`` and ``out/probabilities.npy``."""
    import torch

    from voxforge.models.r2n2.train import load_run
    from voxforge.voxelize.binvox import encode_binvox
    from voxforge.voxelize.grid import VoxelGrid

    if not images:
        raise ValueError("give at least one image")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, _ = load_run(run_dir, device)
    views = np.stack([load_view(path) for path in images])
    tensor = torch.from_numpy(views).permute(0, 3, 1, 2).float().div(255.0)[None].to(device)
    with torch.no_grad():
        probabilities = model.occupancy(model(tensor))[0].float().cpu().numpy()
    occupancy = probabilities > threshold
    resolution = occupancy.shape[0]
    origin, voxel_size = np.full(3, -0.5), 1.0 / resolution
    mesh = cube_mesh(occupancy, origin, voxel_size)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = {
        "binvox": _write_atomic(out / "prediction.binvox",
                                lambda f: f.write(encode_binvox(VoxelGrid(occupancy, origin, voxel_size)))),
        "mesh": _write_atomic(out / "prediction.obj", lambda f: mesh.export(f, file_type="obj")),
        "probabilities": _write_atomic(out / "probabilities.npy",
                                       lambda f: np.save(f, probabilities.astype(np.float16))),
    }
    return {"occupied": int(occupancy.sum()), "views": len(images), "threshold": threshold,
            "faces": len(mesh.faces), "watertight": bool(mesh.is_watertight) if len(mesh.faces) else False,
            "files": written}
