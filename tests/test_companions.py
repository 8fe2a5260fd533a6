"""A mesh downloaded on its own brings the files it refers to (OBJ -> MTL -> textures, glTF -> buffers and
images) from beside it on the server, and nothing a hostile reference names outside its folder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import trimesh
from http_fixtures import LoopbackServer

from voxforge.pipeline.downloads.companions import contained, references
from voxforge.pipeline.downloads.http import DownloadError, DownloadSettings
from voxforge.pipeline.downloads.materialize import ensure_local

FAST = DownloadSettings(timeout=1.0, retries=1, backoff=0.01)


@pytest.fixture(scope="module")
def server():
    fixture = LoopbackServer()
    yield fixture
    fixture.close()


def files_spec(server: LoopbackServer, path: str, dest: Path, data: bytes, mesh: str) -> dict:
    url = server.add_file(path, data)
    return {"kind": "files", "url": url, "dest": str(dest), "mesh": mesh, "sha256": hashlib.sha256(data).hexdigest(),
            "settings": FAST.as_dict()}


def test_references_of_obj_mtl_and_gltf_files(tmp_path):
    (tmp_path / "a.obj").write_text("mtllib one.mtl two.mtl\nmtllib ./sub/../fuze.obj.mtl\nmtllib my model.mtl\n"
                                    "mtllib ../../escape.mtl\nv 0 0 0\n")
    assert references(tmp_path / "a.obj", "a.obj") == ["one.mtl", "two.mtl", "fuze.obj.mtl", "my model.mtl"]
    (tmp_path / "m.mtl").write_text("newmtl x\nmap_Kd -s 1 1 1 -o 0 0 textures/wood.png\nmap_Kd fuze uv.jpg\n"
                                    "bump -bm 0.5 normal.png\nmap_d -clamp on alpha.png\nmap_Ka /etc/passwd\n"
                                    "map_Ks ../../../../etc/shadow\nmap_Ke http://elsewhere.example/x.png\n"
                                    "map_Kd C:\\\\evil.png\nKd 1 1 1\n")
    assert references(tmp_path / "m.mtl", "materials/m.mtl") == [
        "materials/textures/wood.png", "materials/fuze uv.jpg", "materials/normal.png", "materials/alpha.png"]
    (tmp_path / "s.gltf").write_text(json.dumps({
        "buffers": [{"uri": "scene%20data.bin"}, {"uri": "data:application/octet-stream;base64,AAAA"}],
        "images": [{"uri": "textures/a.jpg"}, {"bufferView": 3}, {"uri": "../x.png"}]}))
    assert references(tmp_path / "s.gltf", "s.gltf") == ["scene data.bin", "textures/a.jpg"]
    assert contained("materials", "../tex.png") == "tex.png" and contained("", "../tex.png") is None


def test_a_textured_obj_arrives_with_its_material_and_textures(server, shared_data, tmp_path):
    kaolin = shared_data / "meshes" / "kaolin"
    base = "/repo/abc123/models"
    for name in ("armchair.mtl", "textures/armchair_cushions.jpg", "textures/armchair_legs.jpg"):
        server.add_file(f"{base}/{name}", (kaolin / name).read_bytes())
    spec = files_spec(server, f"{base}/armchair.obj", tmp_path / "cache" / "chair1",
                      (kaolin / "armchair.obj").read_bytes(), "chair1.obj")
    path, downloaded = ensure_local(spec)
    assert downloaded and path == tmp_path / "cache" / "chair1" / "chair1.obj"
    assert sorted(str(p.relative_to(path.parent)) for p in path.parent.rglob("*") if p.is_file()) == [
        "armchair.mtl", "chair1.obj", "textures/armchair_cushions.jpg", "textures/armchair_legs.jpg"]
    scene = trimesh.load(path, force="scene")
    textured = [g for g in scene.geometry.values() if getattr(g.visual, "material", None) is not None
                and getattr(g.visual.material, "image", None) is not None]
    assert len(textured) == 2  # both materials found their images
    assert ensure_local(spec) == (path, False)  # cached
    assert not list((tmp_path / "cache").glob(".*partial"))


def test_gltf_buffers_spaces_missing_and_hostile_references(server, shared_data, tmp_path):
    kaolin, trimesh_meshes = shared_data / "meshes" / "kaolin", shared_data / "meshes" / "trimesh"
    base = "/repo/def456/scene"
    server.add_file(f"{base}/armchair.bin", (kaolin / "armchair.bin").read_bytes())
    server.add_file(f"{base}/textures/armchair_cushions.jpg", (kaolin / "textures/armchair_cushions.jpg").read_bytes())
    # textures/armchair_legs.jpg is not on the server: the object still arrives, without it
    server.add_file("/repo/secret.txt", b"outside the object's folder")
    gltf = json.loads((kaolin / "armchair.gltf").read_text())
    gltf["images"].append({"uri": "../../secret.txt"})
    spec = files_spec(server, f"{base}/armchair.gltf", tmp_path / "g", json.dumps(gltf).encode(), "g.gltf")
    path, _ = ensure_local(spec)
    assert sorted(str(p.relative_to(path.parent)) for p in path.parent.rglob("*") if p.is_file()) == [
        "armchair.bin", "g.gltf", "textures/armchair_cushions.jpg"]
    assert not server.requests_for("secret.txt")  # never even asked for
    mesh = trimesh.load(path, force="mesh")
    assert len(mesh.faces) > 1000 and np.isfinite(mesh.vertices).all()

    base = "/repo/fuze"
    server.add_file(f"{base}/fuze.obj.mtl", (trimesh_meshes / "fuze.obj.mtl").read_bytes())
    server.add_file(f"{base}/fuze uv.jpg", (trimesh_meshes / "fuze uv.jpg").read_bytes())
    spec = files_spec(server, f"{base}/fuze.obj", tmp_path / "f", (trimesh_meshes / "fuze.obj").read_bytes(), "f.obj")
    path, _ = ensure_local(spec)
    assert (path.parent / "fuze uv.jpg").read_bytes() == (trimesh_meshes / "fuze uv.jpg").read_bytes()


def test_a_failing_host_fails_the_object_and_leaves_nothing(server, shared_data, tmp_path):
    kaolin = shared_data / "meshes" / "kaolin"
    base = "/repo/down"
    server.add_file(f"{base}/armchair.mtl", (kaolin / "armchair.mtl").read_bytes())
    server.fault(f"{base}/armchair.mtl", "always:503")
    spec = files_spec(server, f"{base}/armchair.obj", tmp_path / "d", (kaolin / "armchair.obj").read_bytes(), "d.obj")
    with pytest.raises(DownloadError, match="503"):
        ensure_local(spec)
    assert not (tmp_path / "d").exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
