"""Keep credentials out of everything symgen writes, pushes or prints.

Server URLs may carry credentials (``http://user:password@host``) or keys in query parameters
(``?api_key=...``), and the OpenAI key comes from the environment. Requests use them as given;
everything shown or stored (generator specs in cards and rows, progress and error messages) uses
the redacted form: the whole user-info part and every query value become ``***``.
"""

from __future__ import annotations

import re
from typing import Any, Iterable
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

MASK = "***"
#: A URL inside any text (a spec ``tgi:http://u:p@host``, a sentence, a list of servers).
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`,)\]]+")


def redact_url(url: str) -> str:
    """``url`` with its user-info (``user:password@``) and every query value replaced by ``***``.

    >>> redact_url("http://alice:pw@host:8080/v1?api_key=k&x=1")
    'http://***@host:8080/v1?api_key=***&x=***'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK  # not a URL we can take apart: show nothing of it
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    query = "&".join(f"{name}={MASK}" for name, _ in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redact_spec(spec: str) -> str:
    """A ``--generator`` spec with each of its URLs redacted (:func:`redact_url`); specs without
    URLs are returned as they are."""
    kind, colon, target = spec.partition(":")
    if kind not in ("tgi", "openai") or not colon:
        return spec
    servers, hash_, model = target.partition("#")
    return f"{kind}:{','.join(redact_url(url.strip()) for url in servers.split(','))}{hash_}{model}"


def redact_command(argv: Iterable[str]) -> list[str]:
    """A command line with every generator spec and URL in it redacted (``--generator SPEC``,
    ``--generator=SPEC``, or a bare URL)."""
    shown = []
    for arg in argv:
        option, equals, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        if "://" in value:
            value = redact_spec(value) if value.startswith(("tgi:", "openai:")) else redact_url(value)
        shown.append(f"{option}{equals}{value}")
    return shown


def redact_text(text: str) -> str:
    """``text`` with every URL in it that carries credentials or query values redacted
    (:func:`redact_url`; a ``#MODEL`` fragment stays), wherever it stands.

    >>> redact_text("spec: tgi:http://bob:pw@host:80,http://h2 and openai:http://k@h/v1?key=1#m")
    'spec: tgi:http://***@host:80,http://h2 and openai:http://***@h/v1?key=***#m'
    """
    def replace(match: re.Match) -> str:
        url = match.group(0)
        if not url_secrets(url):
            return url
        fragment = url.partition("#")[2]
        return redact_url(url.partition("#")[0]) + (f"#{fragment}" if fragment else "")

    return _URL.sub(replace, text) if "://" in text else text


def redact_record(value: Any) -> Any:
    """A copy of a JSON-like record (card block, training record) with :func:`redact_text`
    applied to every string in it, keys included. Cards written by older versions, or by hand,
    may hold credentials: every card and record is passed through this when read and written."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {redact_record(k) if isinstance(k, str) else k: redact_record(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_record(v) for v in value)
    return value


def url_secrets(url: str) -> list[str]:
    """The secret parts of ``url``: user name, password and query values, as written and
    percent-decoded (empty parts left out)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    found = [parts.username, parts.password, *(value for _, value in parse_qsl(parts.query, keep_blank_values=True))]
    if "@" in parts.netloc:
        found.append(parts.netloc.rpartition("@")[0])
    found += [unquote(value) for value in list(found) if value]
    return [value for value in found if value]


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each of ``secrets`` replaced by ``***`` (longest first,
    so that a secret containing another is masked whole)."""
    for secret in sorted(set(filter(None, secrets)), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text
