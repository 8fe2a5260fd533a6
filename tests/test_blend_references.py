"""A ``.blend`` file is checked for the files it would make Blender read before Blender opens it: libraries
(followed through libraries inside the object's folder), fonts and other files outside the folder refuse
it; images are left to the importer, which drops outside ones with a warning."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import threading

import pytest

pytest.importorskip("blender_asset_tracer")

from voxforge.renderers.blender import blendfile  # noqa: E402
from voxforge.renderers.blender.blendfile import BlendReferenceError, check_references, references  # noqa: E402

MAKE_FILES = r"""
import sys, bpy
root = sys.argv[1]
font = sys.argv[2]

def empty():
    bpy.ops.wm.read_factory_settings(use_empty=True)

def cube(name):
    bpy.ops.mesh.primitive_cube_add(size=1.0)
    bpy.context.active_object.name = name

def link(library, name):
    with bpy.data.libraries.load(library, link=True, relative=True) as (source, target):
        target.objects = [name]
    for obj in target.objects:
        bpy.context.scene.collection.objects.link(obj)

def save(path):
    bpy.ops.wm.save_as_mainfile(filepath=root + path, relative_remap=True, compress=True)

empty(); cube("Linked"); save("/outside/lib.blend")
empty(); cube("Deep"); save("/outside/deep.blend")
empty(); cube("Inside"); save("/object/lib.blend")
empty(); link(root + "/outside/lib.blend", "Linked"); save("/object/models/direct.blend")
empty(); link(root + "/object/lib.blend", "Inside"); save("/object/models/nested.blend")
# the library inside the folder now links a file outside it: only following it finds out
empty(); cube("Inside"); link(root + "/outside/deep.blend", "Deep"); save("/object/lib.blend")
empty(); cube("Body")
bpy.ops.object.text_add()
bpy.context.active_object.data.font = bpy.data.fonts.load(font)
save("/object/models/font.blend")
empty(); cube("Body")
material = bpy.data.materials.new("textured"); material.use_nodes = True
node = material.node_tree.nodes.new("ShaderNodeTexImage")
node.image = bpy.data.images.new("outside", 4, 4)
node.image.filepath = root + "/outside/texture.png"
node.image.source = "FILE"
bpy.context.active_object.data.materials.append(material)
save("/object/models/image.blend")
"""


@pytest.fixture(scope="module")
def blend_files(tmp_path_factory):
    if importlib.util.find_spec("bpy") is None:  # not imported here: the Blender runtime owns that
        pytest.skip("needs bpy")
    root = tmp_path_factory.mktemp("blend")
    for folder in ("outside", "object/models"):
        (root / folder).mkdir(parents=True)
    font = root / "outside" / "font.ttf"
    fonts = [p for p in ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
                         "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf") if os.path.isfile(p)]
    if not fonts:
        pytest.skip("no TrueType font on this machine to link")
    shutil.copy(fonts[0], font)
    (root / "outside" / "texture.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    subprocess.run([sys.executable, "-c", MAKE_FILES, str(root), str(font)], check=True, capture_output=True,
                   timeout=300)
    return root


@pytest.mark.blender
def test_a_library_outside_the_folder_is_found_in_the_file_itself(blend_files):
    models = blend_files / "object" / "models"
    assert references(models / "direct.blend") == [(b"LI", b"//../../outside/lib.blend")]
    with pytest.raises(BlendReferenceError, match=r"^direct\.blend would make Blender read files outside the "
                                                  r"object's folder: //\.\./\.\./outside/lib\.blend \(library\)$"):
        check_references(models / "direct.blend")


@pytest.mark.blender
def test_libraries_inside_the_folder_are_followed(blend_files):
    with pytest.raises(BlendReferenceError, match=r"^nested\.blend \(through lib\.blend\) would make Blender read "
                                                  r"files outside the object's folder: //\.\./outside/deep\.blend \(library\)$"):
        check_references(blend_files / "object" / "models" / "nested.blend")
    # with a root that holds every file, the chain is accepted
    check_references(blend_files / "object" / "models" / "nested.blend", root=blend_files)


@pytest.mark.blender
def test_an_outside_font_refuses_the_file_and_an_outside_image_is_left_to_the_importer(blend_files):
    models = blend_files / "object" / "models"
    with pytest.raises(BlendReferenceError, match=r"outside/font\.ttf \(font\)"):
        check_references(models / "font.blend")
    assert (b"IM", b"//../../outside/texture.png") in references(models / "image.blend")
    check_references(models / "image.blend")  # drop_unsafe_images leaves it out, before any pixel is decoded


@pytest.mark.blender
def test_nothing_outside_is_opened_to_check_it(blend_files, tmp_path):
    """The outside library replaced by a FIFO: opening it would block forever; the check answers at once."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "object" / "models").mkdir(parents=True)
    shutil.copy(blend_files / "object" / "models" / "direct.blend", tmp_path / "object" / "models")
    os.mkfifo(tmp_path / "outside" / "lib.blend")
    errors = []
    thread = threading.Thread(target=lambda: errors.append(pytest.raises(
        BlendReferenceError, check_references, tmp_path / "object" / "models" / "direct.blend")), daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert errors and "outside/lib.blend (library)" in str(errors[0].value)


def test_a_decompression_bomb_is_refused_within_its_bound(tmp_path, monkeypatch):
    zstandard = pytest.importorskip("zstandard")
    path = tmp_path / "bomb.blend"
    path.write_bytes(zstandard.ZstdCompressor().compress(b"BLENDER17-01v0500" + bytes(8 << 20)))
    assert path.stat().st_size < 4096
    monkeypatch.setattr(blendfile, "MAX_DECOMPRESSED_BYTES", 1 << 20)
    with pytest.raises(BlendReferenceError, match=r"bomb\.blend decompresses to more than 1,048,576 bytes"):
        check_references(path)


@pytest.mark.parametrize("content", [b"BLENDER-v279" + os.urandom(64), b"not a blend file at all",
                                     b"\x1f\x8b\x08\x00truncated gzip"])
def test_unreadable_files_are_refused_with_the_cause(tmp_path, content):
    path = tmp_path / "broken.blend"
    path.write_bytes(content)
    with pytest.raises(BlendReferenceError, match=r"broken\.blend (is not a \.blend file|cannot be)"):
        check_references(path)
