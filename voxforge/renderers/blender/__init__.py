"""Blender (bpy) rendering backend; importing this package does not import bpy.

``renderer`` holds the renderer classes, ``runtime`` the once-per-process bpy set-up, ``importers``
and ``geometry`` how meshes get into Blender and back, ``lighting`` the light rig, ``camera`` the
camera conversion and ``exr`` the reader of Blender's per-view output.
"""
