"""``pipeline train --arch softras``, ``pipeline eval`` and ``pipeline predict`` for SoftRas-style runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def train_command(args) -> int:
    from voxforge.models.commands import report_training, run_training

    result = run_training(args, "softras")
    if isinstance(result, int):
        return result
    report_training(result, args, "iou", "silhouette loss 1 - soft IoU")
    return 0


def eval_command(args) -> int:
    import torch

    from voxforge.loaders import open_dataset
    from voxforge.loaders.dataset import plain_background_of, read_dataset_info
    from voxforge.models.commands import run_evaluation, write_report
    from voxforge.models.softras.train import evaluate_softras, load_run

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    read_dataset_info(args.data)  # a missing dataset or run: one line from the CLI (FileNotFoundError)
    model, _, iteration = load_run(args.run, device)
    report = run_evaluation(args, lambda: evaluate_softras(
        model, open_dataset(args.data, None if args.split == "all" else args.split), views=args.views, device=device,
        old_background=plain_background_of(args.data), gallery=args.gallery))
    if isinstance(report, int):
        return report
    rows = report.pop("gallery", [])
    report.update(run=str(args.run), data=str(args.data), split=args.split, iteration=iteration)
    print(f"{report['objects']} object{'' if report['objects'] == 1 else 's'}, {args.split} split, views: {report['views']} "
          f"(voxel IoU of each predicted mesh at the ground truth's resolution)")
    print(f"  {'category':<14} {'IoU':>7} {'mask IoU':>9} {'meshes':>7}")
    for category, values in [("mean", {"iou": report["mean_iou"], "silhouette_iou": report["mean_silhouette_iou"],
                                       "predictions": sum(v["predictions"] for v in report["per_category"].values())})] \
            + list(report["per_category"].items()):
        print(f"  {category:<14} {values['iou']:>7.3f} {values['silhouette_iou']:>9.3f} {values['predictions']:>7}")
    print("  published mean IoU, 13 ShapeNet classes: "
          + ", ".join(f"{name} {value:.3f}" for name, value in report["published_mean_iou"].items()))
    write_report(args.run, report, rows, tile=64, max_views=3)
    return 0


def load_rgba(path: str | Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """An image file as the network's input: RGB over the test colour (H, W, 3) float32 in 0..255 and its
    alpha (H, W) float32 in 0..255, padded to a square and resized to ``size``.

    Raises ValueError for an image without an alpha channel: the model reads the object's mask from it."""
    from PIL import Image

    from voxforge.models.data import TEST_BACKGROUND

    with Image.open(path) as opened:
        if "A" not in opened.getbands() and "transparency" not in opened.info:
            raise ValueError(f"{path}: no alpha channel; softras runs read the object's mask from it "
                             "(give an RGBA PNG, e.g. a voxforge view with its mask as alpha)")
        image = opened.convert("RGBA")
    side = max(image.size)
    square = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    square.paste(image, ((side - image.size[0]) // 2, (side - image.size[1]) // 2))
    square = square.resize((size, size), Image.BOX)
    values = np.asarray(square, np.float32)
    alpha = values[..., 3]
    rgb = values[..., :3] * (alpha[..., None] / 255.0) + TEST_BACKGROUND * (1.0 - alpha[..., None] / 255.0)
    return rgb, alpha


def predict(run_dir: str | Path, images: list[str | Path], out: str | Path, device: str | None = None) -> dict:
    """One mesh per image: ``out/<image name>.obj`` in the object frame (inside [-0.5, 0.5]^3, +Y up)."""
    import torch
    import trimesh

    from voxforge.models.softras.train import load_run

    if not images:
        raise ValueError("give at least one image")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, config, _ = load_run(run_dir, device)
    inputs = []
    for path in images:
        rgb, alpha = load_rgba(path, config.image_size)
        inputs.append(np.concatenate([rgb, alpha[..., None]], axis=-1) / 255.0)
    tensor = torch.from_numpy(np.stack(inputs)).permute(0, 3, 1, 2).float().to(device)
    with torch.no_grad():
        vertices = model(tensor).float().cpu().numpy()
    faces = model.faces.cpu().numpy()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for path, mesh_vertices in zip(images, vertices):
        target = out / f"{Path(path).stem}.obj"
        temporary = target.with_name(target.name + ".partial")
        trimesh.Trimesh(mesh_vertices, faces, process=False).export(temporary, file_type="obj")
        temporary.replace(target)
        written[Path(path).name] = target
    return {"views": len(images), "vertices": int(vertices.shape[1]), "faces": len(faces), "files": written}


def predict_command(args) -> int:
    from voxforge.models.commands import run_prediction

    return run_prediction(
        args, lambda run, images, out: predict(run, images, out, device=args.device),
        lambda result: f"{result['views']} image(s) -> one mesh each ({result['vertices']} vertices, "
                       f"{result['faces']} faces, closed, object frame)")
