"""``pipeline publish``: check a dataset, then copy it to a folder, a ``.tar``/``.zip`` bundle, or a
Hugging Face dataset repo, with a dataset card (README.md) and a preview image.

What is published: ``dataset.json`` (with the run's local paths reduced to their last component:
they name the user's folders and mean nothing elsewhere), ``manifest.jsonl``, ``attribution.csv`` when the
objects were downloaded, every split's complete shards, ``README.md``
(:func:`voxforge.loaders.hf.dataset_card`), ``preview.png`` (the contact sheet of
``pipeline inspect``) and, unless turned off, a Parquet copy of the samples in ``data/`` that the card
makes its default config (it loads in every ``datasets`` from 2.14 on; the shards' card needs 4.7). Never the run's scratch folder or half-written ``.partial`` files. The dataset may
be a local folder or any fsspec URL (``s3://bucket/ds``); files of a remote dataset pass through a local
temporary folder a batch at a time.

Before anything is written the dataset is verified: every shard is read through (tar checksums),
every sample has its metadata, all its views and masks, voxels, points and normals, ids are unique,
and the counts per split and the shard lists agree with ``dataset.json``.

Hub uploads go in batches of files, one commit per batch (large datasets would exceed what one
commit may hold), in ``huggingface_hub``'s own protocol: preupload, LFS (or Xet, when the client has
it) upload, then the commit. Files already in the repo with the same content are skipped, so
re-running an interrupted publish resumes where it stopped; the card goes last, so a half-published
repo never advertises splits it does not hold yet. The token comes from ``HF_TOKEN`` or the saved
login (huggingface_hub reads both); it is never printed or written anywhere by this module.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import zipfile
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voxforge.loaders import format as fmt
from voxforge.loaders.dataset import iter_any_shard
from voxforge.loaders.shards import SHARD_NAME
from voxforge.loaders.tar_stream import TarFormatError
from voxforge.pipeline.run import ATTRIBUTION_FILE
from voxforge.pipeline.stages import file_sha256
from voxforge.storage import Location, StorageError, location

CARD_FILE = "README.md"
PREVIEW_FILE = "preview.png"
FILES_PER_COMMIT = 100
BYTES_PER_COMMIT = 2 * 1024**3


class PublishError(RuntimeError):
    """The dataset cannot be published as it is, or the destination refused it."""


@dataclass
class Verified:
    """What verification found: samples per split, shard files (``train/shard-000000.tar``), and the problems
    (empty when fine)."""

    where: Location
    per_split: Counter = field(default_factory=Counter)
    shards: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _dataset_location(dataset: str | Path) -> Location:
    try:
        where = location(dataset)
    except StorageError as error:
        raise PublishError(str(error)) from None
    if not where.exists(fmt.DATASET_FILE):
        raise PublishError(f"{where.url} is not a voxforge dataset (no {fmt.DATASET_FILE})")
    return where


def verify_dataset(dataset: str | Path) -> Verified:
    """Read every shard through and check each sample and the counts against ``dataset.json`` (a folder
    or any fsspec URL)."""
    where = _dataset_location(dataset)
    result = Verified(where)
    info = json.loads(where.read_text(fmt.DATASET_FILE))
    if str(info.get("format_version", "")).split(".")[0] != fmt.FORMAT_VERSION.split(".")[0]:
        raise PublishError(f"{where.url}: format {info.get('format_version')} is not this voxforge's {fmt.FORMAT_VERSION}")
    ids: set[str] = set()
    for split in fmt.SPLITS:
        listed = set(info["counts"].get("shards", {}).get(split, []))
        found = sorted(f"{split}/{name}" for name in where.list_files(split) if SHARD_NAME.match(name))
        result.shards += found
        for missing in sorted(listed - set(found)):
            result.problems.append(f"{missing}: listed in {fmt.DATASET_FILE} but missing")
        for extra in sorted(set(found) - listed):
            result.problems.append(f"{extra}: not listed in {fmt.DATASET_FILE} (re-run `pipeline run` to refresh it)")
        for shard in found:
            try:
                for key, members in iter_any_shard(where.local_path(shard) if where.is_local else where.url_of(shard)):
                    problem = _check_sample(key, members)
                    if problem is None:
                        object_id = json.loads(members[fmt.META])["id"]
                        if object_id in ids:
                            problem = f"object {object_id!r} appears twice"
                        ids.add(object_id)
                        result.per_split[split] += 1
                    if problem:
                        result.problems.append(f"{shard}: sample {key}: {problem}")
            except TarFormatError as error:
                result.problems.append(f"{shard}: {error}")
        expected = info["counts"]["per_split"].get(split, 0)
        if result.per_split[split] != expected:
            result.problems.append(f"{split}: {result.per_split[split]} samples in the shards, "
                                   f"{expected} in {fmt.DATASET_FILE}")
    return result


def _check_sample(key: str, members: dict[str, bytes]) -> str | None:
    if fmt.META not in members:
        return "no json metadata"
    try:
        meta = json.loads(members[fmt.META])
    except ValueError as error:
        return f"json metadata does not parse ({error})"
    wanted = [fmt.image_member(v) for v in range(meta.get("views", 0))]
    wanted += [fmt.mask_member(v) for v in range(meta.get("views", 0))] + [fmt.VOXELS, fmt.POINTS, fmt.NORMALS]
    missing = [name for name in wanted if not members.get(name)]
    if missing:
        return f"missing or empty members: {', '.join(missing)}"
    if key != fmt.sample_key(meta.get("id", "")):
        return f"key does not match its id {meta.get('id')!r}"
    return _decode_problem(meta, members)


def _decode_problem(meta: dict, members: dict[str, bytes]) -> str | None:
    """The first member that does not decode to what the metadata says (every PNG, the binvox, the
    arrays), or None. Decoding is the only check a loader will not fail later."""
    from PIL import Image

    from voxforge.voxelize.binvox import decode_binvox

    size = meta.get("image_size")
    for view in range(meta.get("views", 0)):
        for name, modes in ((fmt.image_member(view), ("RGB", "RGBA")), (fmt.mask_member(view), ("L",))):
            try:
                with Image.open(io.BytesIO(members[name])) as image:
                    image.load()  # the whole stream: a truncated or zeroed PNG fails here
                    shape, mode = image.size, image.mode
            except Exception as error:  # Pillow raises many types for broken images
                return f"{name} does not decode ({type(error).__name__}: {error})"
            if shape != (size, size) or mode not in modes:
                return f"{name} is {shape[0]}x{shape[1]} {mode}, the metadata says {size}x{size} {'/'.join(modes)}"
    try:
        grid = decode_binvox(members[fmt.VOXELS])
    except Exception as error:  # a malformed header or run-length body
        return f"{fmt.VOXELS} does not decode ({type(error).__name__}: {error})"
    resolution = meta.get("voxels", {}).get("resolution")
    if grid.resolution != resolution:
        return f"{fmt.VOXELS} is {grid.resolution}^3, the metadata says {resolution}^3"
    count = meta.get("points", {}).get("count")
    for name in (fmt.POINTS, fmt.NORMALS):
        try:
            values = np.load(io.BytesIO(members[name]), allow_pickle=False)
        except Exception as error:  # numpy's header parser raises several types
            return f"{name} does not decode ({type(error).__name__}: {error})"
        if values.shape != (count, 3) or not np.isfinite(values).all():
            return f"{name} is {values.shape} (finite: {bool(np.isfinite(values).all())}), the metadata says ({count}, 3)"
    return None


def _require_verified(dataset: str | Path) -> Verified:
    verified = verify_dataset(dataset)
    if verified.problems:
        shown = "\n  ".join(verified.problems[:20])
        more = f"\n  ... and {len(verified.problems) - 20} more" if len(verified.problems) > 20 else ""
        raise PublishError(f"{dataset} did not verify; nothing was published:\n  {shown}{more}")
    return verified


def publish_files(verified: Verified, staging: Path, repo_id: str | None,
                  parquet: bool = True, folder: str | None = None) -> list[tuple[str, str | Path]]:
    """(path in the destination, source) for everything published: a source is a file of the dataset
    (its path relative to the dataset) or a ``Path`` made in ``staging`` (summary, card, preview, and with
    ``parquet`` the Parquet copy of every split, :func:`voxforge.loaders.parquet.export_parquet`)."""
    from voxforge.loaders.hf import HF_SPLIT_NAMES, PARQUET_FOLDER, dataset_card

    where = verified.where
    files: list[tuple[str, str | Path]] = [(name, name) for name in verified.shards]
    parquet_bytes = None
    if parquet:
        from voxforge.loaders.parquet import export_parquet

        export_parquet(where.url, staging / "parquet")
        made = sorted((staging / "parquet" / PARQUET_FOLDER).glob("*.parquet"))
        files += [(f"{PARQUET_FOLDER}/{path.name}", path) for path in made]
        parquet_bytes = {split: sum(path.stat().st_size for path in made
                                    if path.name.startswith(f"{HF_SPLIT_NAMES[split]}-"))
                         for split in fmt.SPLITS}
    files += [(name, name) for name in (fmt.MANIFEST_FILE, ATTRIBUTION_FILE) if where.exists(name)]
    info = public_summary(json.loads(where.read_text(fmt.DATASET_FILE)))
    summary = staging / fmt.DATASET_FILE
    summary.write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    files.append((fmt.DATASET_FILE, summary))
    preview = None
    if sum(verified.per_split.values()):
        from voxforge.pipeline.inspection import contact_sheet

        preview = contact_sheet(where.url, staging / PREVIEW_FILE, samples=6)
        files.append((PREVIEW_FILE, preview))
    card = staging / CARD_FILE
    card.write_text(dataset_card(where.url, repo_id, PREVIEW_FILE if preview else None, info=info,
                                 parquet_bytes=parquet_bytes, folder=folder))
    files.append((CARD_FILE, card))  # last: a partial upload never advertises splits it lacks
    return files


@contextmanager
def local_copies(where: Location, sources: list[str | Path], staging: Path):
    """Local paths for ``sources``: made files and files of a local dataset as they are; files of a remote
    dataset downloaded into ``staging`` for the duration (a batch at a time, not the whole dataset)."""
    fetched = []
    try:
        paths = []
        for source in sources:
            if isinstance(source, Path):
                paths.append(source)
            elif where.is_local:
                paths.append(where.local_path(source))
            else:
                target = staging / "fetched" / source
                target.parent.mkdir(parents=True, exist_ok=True)
                where.fs.get_file(where.path(source), str(target))
                fetched.append(target)
                paths.append(target)
        yield paths
    finally:
        for path in fetched:
            path.unlink(missing_ok=True)


def public_summary(info: dict) -> dict:
    """``dataset.json`` as published: every absolute local path in the configuration cut to its last part."""

    def redact(value):
        if isinstance(value, str) and "://" not in value and os.path.isabs(value):
            return Path(value).name
        if isinstance(value, list):
            return [redact(item) for item in value]
        if isinstance(value, dict):
            return {key: redact(item) for key, item in value.items()}
        return value

    return {**info, "config": redact(info.get("config", {}))}


def _to_folder(files: list[tuple[str, str | Path]], where: Location, staging: Path, destination: Path) -> None:
    if destination.exists() and any(destination.iterdir()):
        raise PublishError(f"--to {destination}: exists and is not empty; choose a new folder")
    partial = destination.with_name(destination.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for name, source in files:
        target = partial / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with local_copies(where, [source], staging) as (path,):
            shutil.copyfile(path, target)
            if file_sha256(path) != file_sha256(target):
                raise PublishError(f"copy of {name} to {target} does not match its source")
    if destination.exists():
        destination.rmdir()
    os.replace(partial, destination)


def bundle_folder(destination: Path) -> str:
    """The one top folder of a ``.tar``/``.zip`` bundle: the bundle's name without its suffix."""
    return destination.name.rsplit(".", 1)[0]


def _to_archive(files: list[tuple[str, str | Path]], where: Location, staging: Path, destination: Path) -> None:
    """A bundle; the shards are already compressed PNG/binvox, so members are stored, not deflated."""
    if destination.exists():
        raise PublishError(f"--to {destination}: already exists")
    partial = destination.with_name(destination.name + ".partial")
    top = bundle_folder(destination)
    sizes = {}
    if destination.suffix == ".zip":
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as bundle:
            for name, source in files:
                with local_copies(where, [source], staging) as (path,):
                    bundle.write(path, f"{top}/{name}")
        with zipfile.ZipFile(partial) as bundle:
            broken = bundle.testzip()
        if broken:
            raise PublishError(f"{partial}: {broken} did not read back")
    else:
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as bundle:
            for name, source in files:
                with local_copies(where, [source], staging) as (path,):
                    sizes[f"{top}/{name}"] = path.stat().st_size
                    bundle.add(path, f"{top}/{name}", recursive=False)
        with tarfile.open(partial) as bundle:
            read_back = {m.name: m.size for m in bundle.getmembers()}
        if any(read_back.get(name) != size for name, size in sizes.items()):
            raise PublishError(f"{partial}: a member did not read back")
    os.replace(partial, destination)


def _hub_api(token: str | None):
    """An authenticated client, checked before any work: a missing or rejected token is one clear error."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    token = token or get_token()
    if not token:
        raise PublishError("no Hugging Face token: set HF_TOKEN or log in once with `hf auth login`")
    api = HfApi(token=token)
    try:
        api.whoami()
    except HfHubHTTPError as error:
        raise PublishError(f"the Hub refused the token ({_first_line(error)}); check HF_TOKEN or log in again") from None
    return api


def _remote_files(api, repo_id: str) -> dict[str, tuple[str | None, str]]:
    """Path -> (LFS sha256 or None, git blob id) of what the repo's main branch holds."""
    from huggingface_hub import RepoFile

    return {entry.path: (entry.lfs.sha256 if entry.lfs else None, entry.blob_id)
            for entry in api.list_repo_tree(repo_id, repo_type="dataset", recursive=True)
            if isinstance(entry, RepoFile)}


def _describe(where: Location, source: str | Path) -> tuple[int, str]:
    """(size, sha256) of a file to publish (a remote dataset's file is streamed through the hash)."""
    if isinstance(source, Path) or where.is_local:
        path = source if isinstance(source, Path) else where.local_path(source)
        return path.stat().st_size, file_sha256(path)
    digest, size = hashlib.sha256(), 0
    with where.open(source) as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def _git_blob_id_of(where: Location, source: str | Path) -> str:
    data = source.read_bytes() if isinstance(source, Path) else where.read_bytes(source)
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _to_hub(files: list[tuple[str, str | Path]], where: Location, staging: Path, api, repo_id: str, private: bool,
            progress: bool, files_per_commit: int = FILES_PER_COMMIT) -> dict:
    """Create the repo if needed, then commit the files that differ, in batches. Returns counts and the URL."""
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import disable_progress_bars
    from tqdm import tqdm

    disable_progress_bars()  # one bar for the whole publish (below), not one per file
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        remote = _remote_files(api, repo_id)
    except HfHubHTTPError as error:
        raise PublishError(f"hf://datasets/{repo_id}: {_first_line(error)}") from None
    todo = []
    for name, source in files:
        size, sha256 = _describe(where, source)
        remote_sha256, blob = remote.get(name, (None, None))
        if blob is not None and (remote_sha256 == sha256 if remote_sha256 else blob == _git_blob_id_of(where, source)):
            continue  # already there with the same content (a resumed publish)
        todo.append((name, source, size))
    batches, batch, batch_bytes = [], [], 0
    for name, source, size in todo:
        if batch and (len(batch) >= files_per_commit or batch_bytes + size > BYTES_PER_COMMIT or name == CARD_FILE):
            batches.append(batch)
            batch, batch_bytes = [], 0
        batch.append((name, source, size))
        batch_bytes += size
    if batch:
        batches.append(batch)
    bar = tqdm(total=sum(size for *_, size in todo), unit="B", unit_scale=True, disable=not progress,
               desc=f"uploading to {repo_id}")
    committed = 0
    try:
        for index, batch in enumerate(batches, 1):
            with local_copies(where, [source for _, source, _ in batch], staging) as paths:
                operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path))
                              for (name, _, _), path in zip(batch, paths)]
                api.create_commit(repo_id, operations, repo_type="dataset",
                                  commit_message=f"voxforge: publish dataset (part {index} of {len(batches)})")
            committed += len(batch)
            bar.update(sum(size for *_, size in batch))
    except HfHubHTTPError as error:
        raise PublishError(f"upload to hf://datasets/{repo_id} stopped after {committed} of {len(todo)} files "
                           f"({_first_line(error)}); run the same command again to resume") from None
    finally:
        bar.close()
    return {"url": str(url), "uploaded": len(todo), "unchanged": len(files) - len(todo), "commits": len(batches)}


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def publish(dataset: str | Path, to: str, private: bool = True, token: str | None = None,
            progress: bool = True, files_per_commit: int = FILES_PER_COMMIT, parquet: bool = True) -> dict:
    """Verify ``dataset`` (a folder or any fsspec URL) and publish it to a folder, a ``.tar``/``.zip`` bundle or
    ``hf://datasets/OWNER/NAME``.

    ``parquet`` (the default) also publishes a Parquet copy of the samples (``data/``), made in a local
    temporary folder first (about the shards' size), and makes it the card's default config, so
    ``datasets.load_dataset`` of the result works from ``datasets`` 2.14 on; without it the card names
    the shards and needs ``datasets`` >= 4.7."""
    repo_id = to[len("hf://datasets/"):].strip("/") if to.startswith("hf://datasets/") else None
    if to.startswith("hf://") and (repo_id is None or repo_id.count("/") != 1):
        raise PublishError(f"--to {to}: Hub destinations look like hf://datasets/OWNER/NAME")
    api = _hub_api(token) if repo_id else None
    verified = _require_verified(dataset)
    summary = {"objects": sum(verified.per_split.values()), "per_split": dict(verified.per_split),
               "shards": len(verified.shards), "to": to}
    with tempfile.TemporaryDirectory(prefix="voxforge-publish-") as staging:
        staging = Path(staging)
        folder = None if repo_id else bundle_folder(Path(to)) if to.endswith((".tar", ".zip")) else Path(to).name
        files = publish_files(verified, staging, repo_id, parquet=parquet, folder=folder)
        summary["files"] = len(files)
        if repo_id:
            summary.update(_to_hub(files, verified.where, staging, api, repo_id, private, progress, files_per_commit))
        elif to.endswith((".tar", ".zip")):
            _to_archive(files, verified.where, staging, Path(to))
        else:
            _to_folder(files, verified.where, staging, Path(to))
    return summary
