"""Headless OpenGL platform choice: EGL (Mesa llvmpipe or the NVIDIA driver), else OSMesa.

Must run before pyrender or PyOpenGL is imported, because PyOpenGL binds its platform at import time.
"""

from __future__ import annotations

import ctypes.util
import os


def _library_present(name: str) -> bool:
    return ctypes.util.find_library(name) is not None


def choose_platform() -> str:
    """Set ``PYOPENGL_PLATFORM`` (unless the user did) and return it; never needs an X server."""
    chosen = os.environ.get("PYOPENGL_PLATFORM")
    if chosen:
        return chosen
    if _library_present("EGL"):
        chosen = "egl"
    elif _library_present("OSMesa"):
        chosen = "osmesa"
    else:
        raise RuntimeError(
            "no headless OpenGL found: install Mesa's EGL (Debian: libegl1 libegl-mesa0) "
            "or OSMesa (libosmesa6, with PyOpenGL>=3.1.5), or use --renderer blender"
        )
    os.environ["PYOPENGL_PLATFORM"] = chosen
    return chosen
