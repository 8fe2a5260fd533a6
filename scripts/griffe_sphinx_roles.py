"""Griffe extension for the API reference: Sphinx roles in docstrings shown as code.

voxforge's docstrings name other objects the Sphinx way (:class:`~voxforge.loaders.torch.ShardDataset`,
:func:`voxforge.pipeline.run.run`); Markdown would print the role. This turns each into a code span with
the name a reader would type (the last part only where Sphinx's ``~`` asks for it). It runs while griffe
reads the source (static analysis: the project is not imported).
"""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):`(~?)([^`]+)`")


def _code(match: re.Match) -> str:
    short, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(_code, obj.docstring.value)
