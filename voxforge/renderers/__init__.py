"""Renderers behind one interface; each backend is imported only when it is used."""

from __future__ import annotations

import importlib

from voxforge.renderers.base import LightRig, RenderResult, Renderer, sample_lighting

# name -> "module:Class"; adding a renderer is one module plus one line here
RENDERERS: dict[str, str] = {
    "pyrender": "voxforge.renderers.pyrender_egl:PyrenderRenderer",
    "blender": "voxforge.renderers.blender.renderer:BlenderRenderer",  # Cycles
    "blender-cycles": "voxforge.renderers.blender.renderer:BlenderRenderer",
    "blender-workbench": "voxforge.renderers.blender.renderer:BlenderWorkbenchRenderer",
    "blender-eevee": "voxforge.renderers.blender.renderer:BlenderEeveeRenderer",
}


def get_renderer(name: str) -> type[Renderer]:
    """The renderer class registered under ``name`` (imports its backend now, not at start-up)."""
    if name not in RENDERERS:
        raise ValueError(f"unknown renderer {name!r}; available: {', '.join(sorted(RENDERERS))}")
    module_name, class_name = RENDERERS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


__all__ = ["RENDERERS", "LightRig", "RenderResult", "Renderer", "get_renderer", "sample_lighting"]
