"""A built-in, seeded source of categorized objects made from parametric parts: no download needed.

Each category draws its proportions and part styles from a generator seeded by (seed, category,
index), so object ``chair/000007`` is the same mesh on every machine. Shapes have the features that
make reconstruction hard: thin legs, slatted backs with holes, hollow mugs with handles, open lamp
shades. Objects are +Y up, like ShapeNet.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, urlparse

import numpy as np
import trimesh

from voxforge.pipeline.sources.base import ObjectRecord, Source, SourceError

Part = trimesh.Trimesh


def _color(rng: np.random.Generator, base: tuple[float, float, float] | None = None) -> np.ndarray:
    rgb = np.asarray(base) if base is not None else rng.uniform(0.15, 0.95, size=3)
    jitter = rng.uniform(-0.08, 0.08, size=3) if base is not None else 0
    return np.append(np.clip(rgb + jitter, 0, 1) * 255, 255).astype(np.uint8)


def _paint(part: Part, color: np.ndarray) -> Part:
    part.visual.face_colors = np.tile(color, (len(part.faces), 1))
    return part


def _box(extents, center) -> Part:
    return trimesh.creation.box(extents=extents, transform=trimesh.transformations.translation_matrix(center))


def _rod(start, end, radius: float, round_: bool = True) -> Part:
    """A leg/pole between two points: a cylinder, or a square-section beam."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    if round_:
        return trimesh.creation.cylinder(radius=radius, segment=[start, end], sections=12)
    length = np.linalg.norm(end - start)
    beam = trimesh.creation.box(extents=[2 * radius, 2 * radius, length])
    align = trimesh.geometry.align_vectors([0, 0, 1], (end - start) / length)
    beam.apply_transform(trimesh.transformations.translation_matrix((start + end) / 2) @ align)
    return beam


def _revolve_y(profile: np.ndarray, sections: int = 32) -> Part:
    """Revolve a (radius, height) profile around +Y."""
    mesh = trimesh.creation.revolve(profile, sections=sections)
    mesh.apply_transform(trimesh.transformations.rotation_matrix(-np.pi / 2, [1, 0, 0]))
    return mesh


def chair(rng: np.random.Generator) -> list[Part]:
    width, depth = rng.uniform(0.4, 0.6), rng.uniform(0.38, 0.58)
    seat_h, seat_t = rng.uniform(0.38, 0.5), rng.uniform(0.03, 0.08)
    leg_r, round_legs = rng.uniform(0.012, 0.03), bool(rng.random() < 0.5)
    wood, fabric = _color(rng), _color(rng)
    parts = [_paint(_box([width, seat_t, depth], [0, seat_h, 0]), fabric)]
    inset = leg_r * 1.5
    for sx in (-1, 1):
        for sz in (-1, 1):
            x, z = sx * (width / 2 - inset), sz * (depth / 2 - inset)
            splay = rng.uniform(0, 0.04)
            parts.append(_paint(_rod([x + sx * splay, 0, z + sz * splay], [x, seat_h, z], leg_r, round_legs), wood))
    back_h, back_t = rng.uniform(0.3, 0.55), rng.uniform(0.025, 0.05)
    back_z, top = -depth / 2 + back_t / 2, seat_h + seat_t / 2
    style = rng.integers(3)
    if style == 0:  # solid panel
        parts.append(_paint(_box([width, back_h, back_t], [0, top + back_h / 2, back_z]), fabric))
    else:  # two posts and a top rail, with vertical slats (style 1) or an open frame (style 2)
        post_w = rng.uniform(0.03, 0.05)
        for sx in (-1, 1):
            parts.append(_paint(_box([post_w, back_h, back_t], [sx * (width - post_w) / 2, top + back_h / 2, back_z]), wood))
        rail_h = rng.uniform(0.05, 0.1)
        parts.append(_paint(_box([width, rail_h, back_t], [0, top + back_h - rail_h / 2, back_z]), wood))
        if style == 1:
            slats = int(rng.integers(2, 6))
            for x in np.linspace(-width / 2 + post_w, width / 2 - post_w, slats + 2)[1:-1]:
                parts.append(_paint(_box([0.02, back_h - rail_h, back_t * 0.6], [x, top + (back_h - rail_h) / 2, back_z]), wood))
    if rng.random() < 0.35:  # arm rests
        arm_h = rng.uniform(0.15, 0.25)
        for sx in (-1, 1):
            x = sx * (width / 2 - 0.02)
            parts.append(_paint(_box([0.04, 0.03, depth * 0.9], [x, top + arm_h, 0]), wood))
            parts.append(_paint(_rod([x, top, depth * 0.35], [x, top + arm_h, depth * 0.35], 0.015), wood))
    return parts


def table(rng: np.random.Generator) -> list[Part]:
    height, top_t = rng.uniform(0.45, 0.8), rng.uniform(0.02, 0.06)
    wood, metal = _color(rng), _color(rng)
    round_top = rng.random() < 0.4
    if round_top:
        radius = rng.uniform(0.35, 0.6)
        top = trimesh.creation.cylinder(radius=radius, height=top_t, sections=40)
        top.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
        top.apply_translation([0, height, 0])
        parts = [_paint(top, wood)]
        width = depth = radius * 1.4
    else:
        width, depth = rng.uniform(0.6, 1.4), rng.uniform(0.4, 0.8)
        parts = [_paint(_box([width, top_t, depth], [0, height, 0]), wood)]
    if round_top or rng.random() < 0.25:  # pedestal with a foot
        parts.append(_paint(_rod([0, 0, 0], [0, height, 0], rng.uniform(0.03, 0.06)), metal))
        foot = trimesh.creation.cylinder(radius=min(width, depth) * rng.uniform(0.3, 0.45), height=0.03, sections=32)
        foot.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
        parts.append(_paint(foot, metal))
    else:
        leg_r, round_legs = rng.uniform(0.012, 0.035), bool(rng.random() < 0.5)
        for sx in (-1, 1):
            for sz in (-1, 1):
                x, z = sx * (width / 2 - 0.05), sz * (depth / 2 - 0.05)
                parts.append(_paint(_rod([x, 0, z], [x, height, z], leg_r, round_legs), wood))
        if rng.random() < 0.4:  # lower shelf
            parts.append(_paint(_box([width - 0.1, 0.02, depth - 0.1], [0, height * rng.uniform(0.15, 0.35), 0]), wood))
    return parts


def car(rng: np.random.Generator) -> list[Part]:
    length, width = 1.0, rng.uniform(0.38, 0.5)
    body_h, clearance = rng.uniform(0.12, 0.22), rng.uniform(0.06, 0.1)
    paint, glass, rubber = _color(rng), _color(rng, (0.2, 0.25, 0.3)), _color(rng, (0.08, 0.08, 0.08))
    wheel_r = rng.uniform(0.08, 0.12)
    parts = [_paint(_box([length, body_h, width], [0, clearance + body_h / 2, 0]), paint)]
    cabin_l, cabin_h = rng.uniform(0.35, 0.6), rng.uniform(0.1, 0.18)
    cabin_x = rng.uniform(-0.15, 0.1)
    parts.append(_paint(_box([cabin_l, cabin_h, width * 0.9], [cabin_x, clearance + body_h + cabin_h / 2, 0]), glass))
    for x in (-length / 2 + wheel_r * 1.3, length / 2 - wheel_r * 1.3):
        for sz in (-1, 1):
            wheel = trimesh.creation.cylinder(radius=wheel_r, height=0.06, sections=24)
            wheel.apply_translation([x, wheel_r, sz * (width / 2)])
            parts.append(_paint(wheel, rubber))
    if rng.random() < 0.3:  # spoiler on posts
        rear = -length / 2 + 0.05
        top = clearance + body_h
        parts.append(_paint(_box([0.08, 0.015, width * 0.9], [rear, top + 0.07, 0]), paint))
        for sz in (-1, 1):
            parts.append(_paint(_box([0.02, 0.07, 0.02], [rear, top + 0.035, sz * width * 0.3]), paint))
    return parts


def airplane(rng: np.random.Generator) -> list[Part]:
    length, radius = 1.0, rng.uniform(0.04, 0.08)
    body, accent = _color(rng, (0.85, 0.85, 0.88)), _color(rng)
    fuselage = trimesh.creation.capsule(height=length - 2 * radius, radius=radius, count=[16, 16])
    fuselage.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [0, 1, 0]))
    parts = [_paint(fuselage, body)]
    span, chord, sweep = rng.uniform(0.8, 1.2), rng.uniform(0.12, 0.22), rng.uniform(0.0, 0.5)
    wing_x = rng.uniform(-0.05, 0.1)
    for sz in (-1, 1):
        wing = _box([chord, 0.015, span / 2], [0, 0, 0])
        wing.apply_transform(trimesh.transformations.rotation_matrix(sz * sweep, [0, 1, 0]))
        wing.apply_translation([wing_x - np.sin(sweep) * span / 4, -radius * 0.3, sz * span / 4])
        parts.append(_paint(wing, body))
        if rng.random() < 0.7:  # engine under the wing
            engine = trimesh.creation.cylinder(radius=radius * 0.6, height=chord, sections=16)
            engine.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [0, 1, 0]))
            engine.apply_translation([wing_x - np.sin(sweep) * span / 6, -radius * 1.2, sz * span / 6])
            parts.append(_paint(engine, accent))
    tail_x = -length / 2 + 0.08
    parts.append(_paint(_box([0.1, 0.01, span * rng.uniform(0.25, 0.4)], [tail_x, 0, 0]), body))
    fin_h = rng.uniform(0.1, 0.2)
    parts.append(_paint(_box([0.12, fin_h, 0.012], [tail_x, radius + fin_h / 2 - 0.01, 0]), accent))
    return parts


def lamp(rng: np.random.Generator) -> list[Part]:
    metal, shade_color = _color(rng), _color(rng)
    base_r, base_h = rng.uniform(0.08, 0.18), rng.uniform(0.02, 0.05)
    parts = [_paint(_revolve_y(np.array([[0, 0], [base_r, 0], [base_r * 0.8, base_h], [0, base_h]])), metal)]
    height = rng.uniform(0.4, 0.9)
    pole_r = rng.uniform(0.008, 0.02)
    top = np.array([0.0, height, 0.0])
    if rng.random() < 0.4:  # a bent arm
        bend = np.array([rng.uniform(0.1, 0.25), height * rng.uniform(0.5, 0.7), 0.0])
        parts += [_paint(_rod([0, base_h, 0], bend, pole_r), metal), _paint(_rod(bend, top + [0.15, 0, 0], pole_r), metal)]
        top = top + [0.15, 0, 0]
    else:
        parts.append(_paint(_rod([0, base_h, 0], top, pole_r), metal))
    bottom_r, top_r, shade_h, wall = rng.uniform(0.1, 0.2), rng.uniform(0.04, 0.1), rng.uniform(0.1, 0.2), 0.006
    # an open frustum with a thin wall: light goes through, you can see inside from below
    profile = np.array([[bottom_r, 0], [top_r, shade_h], [top_r - wall, shade_h], [bottom_r - wall, 0], [bottom_r, 0]])
    shade = _revolve_y(profile, sections=40)
    shade.apply_translation(top - [0, shade_h * 0.6, 0])
    parts.append(_paint(shade, shade_color))
    return parts


def mug(rng: np.random.Generator) -> list[Part]:
    glaze = _color(rng)
    radius, height = rng.uniform(0.12, 0.2), rng.uniform(0.2, 0.35)
    wall, floor = rng.uniform(0.01, 0.025), rng.uniform(0.015, 0.03)
    taper = rng.uniform(0.85, 1.0)
    profile = np.array([
        [0, 0], [radius * taper, 0], [radius, height], [radius - wall, height],
        [radius * taper - wall, floor], [0, floor],
    ])
    parts = [_paint(_revolve_y(profile, sections=48), glaze)]
    handle_r, thickness = height * rng.uniform(0.25, 0.38), rng.uniform(0.012, 0.025)
    handle = trimesh.creation.torus(major_radius=handle_r, minor_radius=thickness, major_sections=32, minor_sections=12)
    handle.apply_translation([radius + handle_r * 0.55, height * 0.5, 0])
    parts.append(_paint(handle, glaze))
    return parts


GENERATORS: dict[str, Callable[[np.random.Generator], list[Part]]] = {
    "chair": chair, "table": table, "car": car, "airplane": airplane, "lamp": lamp, "mug": mug,
}


def object_seed(seed: int, category: str, index: int) -> int:
    digest = hashlib.sha256(f"{seed}/{category}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def generate(category: str, index: int, seed: int = 0) -> trimesh.Scene:
    """The mesh of procedural object ``category/index`` for ``seed`` (parts keep their face colours).

    Parts are merged into one mesh: one draw call per view instead of one per part.
    """
    if category not in GENERATORS:
        raise SourceError(f"no procedural generator for {category!r}")
    rng = np.random.default_rng(object_seed(seed, category, index))
    merged = trimesh.util.concatenate(GENERATORS[category](rng))
    return trimesh.Scene({f"{category}_{index:06d}": merged})


class ProceduralSource(Source):
    """Unlimited objects per category; ``count_per_category`` of each unless ``--limit`` says otherwise."""

    name = "procedural"

    def __init__(self, seed: int = 0, count_per_category: int = 1000) -> None:
        self.seed = seed
        self.count_per_category = count_per_category

    def categories(self) -> list[str]:
        return list(GENERATORS)

    def select(self, categories: list[str] | None, limit: int | None) -> list[ObjectRecord]:
        return list(self.stream(categories, limit))

    def stream(self, categories: list[str] | None, limit: int | None) -> Iterator[ObjectRecord]:
        """Index by index across the categories (the balanced order of :meth:`Source.select`), made as
        they are taken: ``--limit`` objects in all (``count_per_category`` of each without one)."""
        resolved = self.resolve_categories(categories)
        total = limit if limit is not None else self.count_per_category * len(resolved)
        for position in range(total):
            yield self.record(resolved[position % len(resolved)], position // len(resolved))

    def record(self, category: str, index: int) -> ObjectRecord:
        return ObjectRecord(
            object_id=f"{category}/{index:06d}",
            category=category,
            source=self.name,
            uri=f"procedural://{category}/{index}?seed={self.seed}",
            license="CC0-1.0 (generated by voxforge)",
        )

    def records(self, categories: list[str]) -> Iterator[ObjectRecord]:
        for category in categories:
            for index in range(self.count_per_category):
                yield self.record(category, index)

    @classmethod
    def load_record(cls, record: ObjectRecord) -> trimesh.Scene:
        parsed = urlparse(record.uri)
        seed = int(parse_qs(parsed.query).get("seed", ["0"])[0])
        return generate(parsed.netloc, int(parsed.path.strip("/")), seed)
