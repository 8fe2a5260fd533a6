"""Texture images checked from their header before anything decodes them.

A PNG of 30000x30000 pixels compresses to a few hundred KB and decodes to 2.7 GB; renderers decode
textures whole (Blender on first use, Pillow for pyrender). Every reader of an untrusted file therefore
asks :func:`texture_problem` first, which reads only the header (Pillow opens images lazily), and leaves
out a texture above :attr:`voxforge.meshio.Limits.max_texture_pixels`, or one whose header cannot be
read, with a warning: the material then shows its base colour.
"""

from __future__ import annotations

import io
import os
import re
import warnings

from voxforge.meshio import Limits


def texture_problem(source: bytes | str | os.PathLike, name: str) -> str | None:
    """Why the image ``source`` (its bytes, or a path) must not be decoded, as a sample warning naming it
    ``name``; None when its width x height is within the limit."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
                width, height = image.size
    except Image.DecompressionBombError as error:  # above Pillow's own bound (which says the size): far above ours
        pixels = re.search(r"\((\d+) pixels\)", str(error))
        return _too_large(f"{int(pixels.group(1)):,} pixels" if pixels else "too many pixels", name)
    except Image.UnidentifiedImageError:
        return f"texture image '{name}' is not in an image format voxforge can check: rendered with the material's " \
               "base colour"
    except Exception as error:  # noqa: BLE001 (Pillow raises many types for broken images)
        return f"texture image '{name}' cannot be read ({error}): rendered with the material's base colour"
    if Limits.max_texture_pixels and width * height > Limits.max_texture_pixels:
        return _too_large(f"{width}x{height} pixels", name)
    return None


def _too_large(size: str, name: str) -> str:
    return (f"texture image '{name}' is {size}, above the limit of {Limits.max_texture_pixels:,} pixels "
            "(--max-texture-pixels): rendered with the material's base colour")
