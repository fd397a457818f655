"""Jinja2 prompt templates, one file per (task family, stage), rendered with :func:`render`.

Built-in templates live in this folder; a task in another package keeps its own in
``<package>/prompts`` and names that package (``Task.template_package``).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources

import jinja2


@lru_cache(maxsize=None)
def _environment(package: str) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader(package, "prompts"),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )


def render(template: str, package: str = "symgen_datasets", **context) -> str:
    """Render ``<package>/prompts/<template>`` with ``context``.

    Raises:
        jinja2.TemplateNotFound: no such template.
        jinja2.UndefinedError: the template uses a variable not in ``context``.
    """
    return _environment(package).get_template(template).render(**context)


def template_hash(template: str, package: str = "symgen_datasets") -> str:
    """SHA-256 (first 12 hex digits) of a template's source, recorded in dataset cards."""
    source = resources.files(package).joinpath("prompts", template).read_bytes()
    return hashlib.sha256(source).hexdigest()[:12]
