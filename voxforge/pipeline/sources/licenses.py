"""Licence names as short slugs, and the ``--licenses`` filter.

Objaverse 1.0 uses Sketchfab's slugs (``by``, ``by-sa``, ``by-nc``, ``by-nc-sa``, ``cc0``, ...);
Objaverse-XL's tables also hold long names ("Creative Commons - Attribution", "MIT License", ...).
Both map to one slug, so one filter works for every source. ``commercial`` stands for the licences
that allow commercial use.
"""

from __future__ import annotations

import re

CREATIVE_COMMONS = ("by", "by-sa", "by-nd", "by-nc", "by-nc-sa", "by-nc-nd", "cc0")
SOFTWARE = {"mit": "mit", "mit-license": "mit", "apache-2.0": "apache-2.0", "apache-license-2.0": "apache-2.0",
            "bsd-2-clause": "bsd-2-clause", "bsd-3-clause": "bsd-3-clause", "unlicense": "unlicense",
            "the-unlicense": "unlicense", "public-domain": "public-domain"}
COMMERCIAL = {"by", "by-sa", "by-nd", "cc0", "public-domain", "mit", "apache-2.0", "bsd-2-clause", "bsd-3-clause",
              "unlicense"}
NAMES = {"by": "CC BY 4.0", "by-sa": "CC BY-SA 4.0", "by-nd": "CC BY-ND 4.0", "by-nc": "CC BY-NC 4.0",
         "by-nc-sa": "CC BY-NC-SA 4.0", "by-nc-nd": "CC BY-NC-ND 4.0", "cc0": "CC0 1.0"}


def license_slug(text: object) -> str:
    """``"Creative Commons - Attribution - Share Alike"`` -> ``by-sa``; unknown texts as a lower-case slug."""
    raw = str(text or "").strip().lower()
    if raw in ("", "none", "nan", "null", "unknown"):
        return "unknown"
    if raw in CREATIVE_COMMONS:
        return raw
    words = re.sub(r"[^a-z0-9]+", " ", raw)
    if "cc0" in words.split() or "zero" in words or "public domain dedication" in words:
        return "cc0"
    if "creative commons" in words or "attribution" in words or re.match(r"^cc by\b", words):
        parts = ["by"]
        if re.search(r"\bnc\b|non ?commercial", words):
            parts.append("nc")
        if re.search(r"\bnd\b|no ?deriv", words):
            parts.append("nd")
        elif re.search(r"\bsa\b|share ?alike", words):
            parts.append("sa")
        return "-".join(parts)
    slug = re.sub(r"[^a-z0-9.]+", "-", raw).strip("-")
    return SOFTWARE.get(slug, slug)


def license_filter(requested: list[str] | None):
    """A predicate on slugs; None when every licence is allowed."""
    if not requested:
        return None
    allowed: set[str] = set()
    for item in requested:
        key = item.strip().lower()
        allowed |= COMMERCIAL if key == "commercial" else {license_slug(key)}
    return lambda slug: slug in allowed


def license_name(slug: str) -> str:
    return NAMES.get(slug, slug)
