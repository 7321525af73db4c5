"""Store URLs: taken apart strictly, and shown without their password.

Every store reads its URL with these pieces: :func:`split_options` (the
query), :func:`split_url` (scheme, credentials, hosts, path),
:func:`split_host` (one ``host:port``) and :func:`read_options` (the query's
values, typed). Percent-encoded bytes that are not UTF-8 are refused, never
replaced by U+FFFD (two different URLs would name the same namespace).

Every message that can contain a URL shows it through :func:`mask_url` (one
URL) or :func:`mask_secrets` (free text, e.g. a command's output).
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple
from urllib.parse import quote, unquote

from .exceptions import ContextConfigurationError

__all__ = [
    "COMMON_OPTIONS",
    "WRAPPER_OPTIONS",
    "UrlParts",
    "check_host",
    "coerce_option",
    "decode",
    "mask_secrets",
    "mask_url",
    "read_options",
    "split_host",
    "split_options",
    "split_url",
]

MASK = "***"
#: Query options every store accepts.
COMMON_OPTIONS: dict[str, type] = {"namespace": str, "max_value_size": int}
#: Query options read by :func:`~context_framework.registry.open_store` itself (wrapper layers).
WRAPPER_OPTIONS: dict[str, type] = {"buffer": int, "flush_interval": float, "cache": int, "cache_ttl": float}

_URL_START = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_URL_END = re.compile(r"[\s'\"]")  # where a URL written into a message ends
_SECRET_OPTION = re.compile(r"([?&][^=&#]*password[^=&#]*=)([^&#]*)", re.IGNORECASE)


# --------------------------------------------------------------------------- masking


def _userinfo_end(rest: str) -> int:
    """Index of the ``@`` that ends the credentials in ``rest`` (the URL after ``://``), or -1.

    It is the last ``@`` before the query, so a password may hold a raw ``@``,
    ``:``, ``#`` or even ``/``; a URL whose authority is empty (``sqlite:///a@b``) has none.
    """
    if rest.startswith("/"):
        return -1
    query = rest.find("?")
    return rest.rfind("@", 0, query if query >= 0 else len(rest))


def _password_span(rest: str) -> tuple[int, int] | None:
    """Where the password is in ``rest`` (the URL after ``://``), if it has one."""
    at = _userinfo_end(rest)
    colon = rest.find(":", 0, at) if at >= 0 else -1
    return (colon + 1, at) if colon >= 0 else None


def mask_url(url: str) -> str:
    """``url`` with its password (and any ``password=`` option) shown as ``***``."""
    head, sep, rest = url.partition("://")
    if not sep:  # not a URL: hide whatever could be credentials ("redis:u:pw@h")
        first, last = url.find(":"), url.rfind("@")
        return f"{url[: first + 1]}{MASK}{url[last:]}" if 0 <= first < last else url
    span = _password_span(rest)
    if span is not None:
        rest = rest[: span[0]] + MASK + rest[span[1] :]
    return head + sep + _SECRET_OPTION.sub(rf"\1{MASK}", rest)


def _passwords(url: str) -> list[str]:
    """The password of ``url`` as written (and its ``password=`` options): the secrets to hide."""
    rest = url.partition("://")[2]
    span = _password_span(rest)
    found = [rest[span[0] : span[1]]] if span is not None else []
    return found + [match.group(2) for match in _SECRET_OPTION.finditer(rest)]


def _forms(secret: str) -> set[str]:
    """The ways ``secret`` can appear in a message: as written, decoded, encoded, escaped."""
    decoded = unquote(secret, errors="replace")
    forms = {secret, decoded, quote(decoded, safe=""), quote(decoded)}
    for text in (secret, decoded):
        forms.add(repr(text)[1:-1])
        forms.add(json.dumps(text)[1:-1])
    return {f for f in forms if f}


def mask_secrets(text: str, urls: Iterable[str | None] = (), secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every URL in it masked (:func:`mask_url`) and every given secret hidden.

    ``urls``: URLs whose passwords must not appear anywhere in ``text`` (in
    any spelling: as written, percent-decoded or -encoded, escaped by ``repr``
    or JSON); ``secrets``: more passwords (decoded) to hide the same way.
    """
    hidden: set[str] = set()
    for url in urls:
        if isinstance(url, str):
            for password in _passwords(url):
                hidden |= _forms(password)
    for secret in secrets:
        if isinstance(secret, str) and secret:
            hidden |= _forms(secret)
    for form in sorted(hidden, key=len, reverse=True):
        text = text.replace(form, MASK)
    if "://" not in text:
        return text
    out = []
    pos = 0
    for match in _URL_START.finditer(text):
        if match.start() < pos:
            continue  # inside the URL just masked
        end_match = _URL_END.search(text, match.end())
        end = end_match.start() if end_match else len(text)
        out.append(text[pos : match.start()])
        out.append(mask_url(text[match.start() : end]))
        pos = end
    out.append(text[pos:])
    return "".join(out)


# --------------------------------------------------------------------------- taking URLs apart


def decode(text: str, what: str, url: str) -> str:
    """Percent-decode ``text``, the ``what`` of ``url``; refuse bytes that are not UTF-8."""
    if "%" not in text:
        return text
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise ContextConfigurationError(
            f"the {what} in store URL {mask_url(url)!r} is percent-encoded bytes that are not UTF-8 "
            "text; encode its characters as UTF-8 (e.g. 'é' as %C3%A9)"
        ) from None


def split_options(url: str) -> tuple[str, dict[str, str]]:
    """Split ``url`` into the part before ``?`` and its query options, decoded strictly.

    A ``+`` in the query is a space, as in HTML forms; a repeated option keeps its last value.
    """
    base, _, query = url.partition("?")
    options: dict[str, str] = {}
    for pair in query.split("&"):
        if not pair:
            continue
        name, _, value = pair.replace("+", " ").partition("=")
        name = decode(name, "option name", url)
        options[name] = decode(value, f"option {name!r}", url)
    return base, options


class UrlParts(NamedTuple):
    """A store URL (without its query) in pieces; only ``user`` and ``password`` are decoded."""

    scheme: str  #: lower case
    userinfo: str  #: ``user:password`` as written, ``""`` when the URL has none
    at: str  #: ``"@"`` when the URL has credentials, else ``""``
    user: str | None
    password: str | None
    hosts: str  #: ``host:port`` (or several, comma-separated) as written
    slash: bool  #: whether a ``/`` follows the hosts
    path: str  #: what follows that ``/``, as written


def split_url(base: str) -> UrlParts:
    """Take ``scheme://user:password@hosts/path`` apart (the query split off already).

    The hosts end at the first ``/``; the credentials at the last ``@`` before
    it, so a password may hold a raw ``@`` or ``:`` (a ``/`` is written ``%2F``).
    """
    scheme, sep, rest = base.partition("://")
    if not sep:
        raise ContextConfigurationError(f"a store URL looks like scheme://host/path, got {mask_url(base)!r}")
    authority, slash, path = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    user, colon, password = userinfo.partition(":")
    return UrlParts(
        scheme=scheme.lower(),
        userinfo=userinfo,
        at=at,
        user=decode(user, "user name", base) or None,
        password=decode(password, "password", base) if colon else None,
        hosts=hosts,
        slash=bool(slash),
        path=path,
    )


def check_host(host: str, url: str | None = None) -> str:
    """``host``, if a resolver can take it: an IP address, a socket folder, or a name whose
    labels (between dots) are 1 to 63 characters long; else ContextConfigurationError."""
    if host and not host.startswith("/"):
        try:
            host.encode("idna")
        except UnicodeError:
            where = f" in store URL {mask_url(url)!r}" if url is not None else ""
            raise ContextConfigurationError(
                f"{host!r}{where} is not a host name: each part between dots is 1 to 63 characters"
            ) from None
    return host


def split_host(text: str, default_port: int, url: str) -> tuple[str, int]:
    """``(host, port)`` of ``host``, ``host:port``, ``[IPv6]`` or ``[IPv6]:port`` (host decoded)."""
    if text.startswith("["):
        inside, close, after = text[1:].partition("]")
        if not close:
            raise ContextConfigurationError(
                f"the IPv6 address in store URL {mask_url(url)!r} is not closed: write [::1]:6379"
            )
        host = decode(inside, "host", url)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ContextConfigurationError(
                f"{host!r} in brackets in store URL {mask_url(url)!r} is not an IPv6 address; "
                "only IPv6 addresses go in brackets ([::1]:6379)"
            ) from None
        if after and not after.startswith(":"):
            raise ContextConfigurationError(
                f"after ']' comes ':port' or nothing, in store URL {mask_url(url)!r}"
            )
        port_text = after[1:]
    else:
        host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
        if "[" in host or "]" in host:
            raise ContextConfigurationError(
                f"brackets go around a whole IPv6 address ([::1]:6379), in store URL {mask_url(url)!r}"
            )
        host = check_host(decode(host, "host", url), url)
    if not port_text:
        return host, default_port
    port = int(port_text) if port_text.isascii() and port_text.isdigit() else 0
    if not 1 <= port <= 65535:
        raise ContextConfigurationError(
            f"the port in store URL {mask_url(url)!r} is not a number from 1 to 65535"
        )
    return host, port


# --------------------------------------------------------------------------- query options


def coerce_option(name: str, raw: str, kind: type) -> Any:
    """The query value ``raw`` of option ``name`` as a ``kind`` (str, int, float or bool)."""
    if kind is str:
        return raw
    if raw.lower() in ("none", "null") and name == "max_value_size":
        return None
    try:
        if kind is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        return kind(raw)
    except ValueError:
        raise ContextConfigurationError(
            f"store URL option {name}={raw!r} is not a valid {kind.__name__}"
        ) from None


def unknown_option(name: str, accepted: Iterable[str], owner: str) -> ContextConfigurationError:
    """The error for an option ``owner`` does not take: the close match, and every option there is."""
    accepted = sorted(accepted)
    wrappers = sorted(set(WRAPPER_OPTIONS) - set(accepted))
    close = difflib.get_close_matches(name, [*accepted, *wrappers], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ContextConfigurationError(
        f"unknown option {name!r} in store URL{hint}; {owner} accepts: {', '.join(accepted)}; "
        f"open_store also reads: {', '.join(wrappers)}"
    )


def read_options(query: Mapping[str, str], accepted: Mapping[str, type], owner: str) -> dict[str, Any]:
    """The query options, typed by ``accepted``; an unknown one is refused with the close match."""
    options = {}
    for name, raw in query.items():
        kind = accepted.get(name)
        if kind is None:
            raise unknown_option(name, accepted, owner)
        options[name] = coerce_option(name, raw, kind)
    return options
