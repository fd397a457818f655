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


def template_sources(template: str, package: str = "symgen_datasets") -> dict[str, bytes]:
    """A template's source and those of every template it includes, imports or extends,
    transitively, by name."""
    from jinja2 import meta

    found: dict[str, bytes] = {}
    pending = [template]
    while pending:
        name = pending.pop()
        if name in found:
            continue
        source = resources.files(package).joinpath("prompts", name).read_bytes()
        found[name] = source
        parsed = _environment(package).parse(source.decode("utf-8"))
        pending += [child for child in meta.find_referenced_templates(parsed) if child]
    return found


def template_hash(template: str, package: str = "symgen_datasets") -> str:
    """SHA-256 (first 12 hex digits) of a template's source and of the templates it includes
    (a change to an included template changes the hash), recorded in dataset cards and in cache
    keys. A template that includes nothing hashes its source alone."""
    sources = template_sources(template, package)
    digest = hashlib.sha256(sources.pop(template))
    for name in sorted(sources):
        digest.update(b"\0" + name.encode() + b"\0" + sources[name])
    return digest.hexdigest()[:12]
