"""The keys file (`lorakit serve --keys keys.yaml`): API keys → tenants, read and checked at startup.

    tenants:
      - name: acme                      # letters, digits, '.', '_', '-'; shown in /metrics
        key_sha256: ebb2d2d30...        # SHA-256 (hex) of the key: printf %s 'KEY' | sha256sum
        adapters: ["acme-*", "shared-summary"]  # glob patterns of the adapter names it may use
        base: false                     # may use the base model directly (default false)
        manage: true                    # may load and unload its adapters (default false)
        metrics: false                  # may read /metrics (default false)
      - name: ops
        key: "a-plain-key"              # or the key itself, instead of key_sha256
        metrics: true

Every problem is one `LorakitError` line naming the tenant, the field and the fix. Keys are kept
only as SHA-256 digests; `KeyTable.find` hashes the key a request sends and compares it with every
digest in constant time (`hmac.compare_digest`), so neither which tenant matched nor how much of a
key was right shows in the answer's timing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lorakit.errors import LorakitError
from lorakit.serve.http.tenants import RESERVED_NAMES, Tenant

PERMISSIONS = ("base", "manage", "metrics")
FIELDS = ("name", "key", "key_sha256", "adapters", *PERMISSIONS)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_PATTERN = re.compile(r"[A-Za-z0-9._\-*?\[\]!]+")  # adapter-name characters and fnmatch's wildcards
_HEX = re.compile(r"[0-9a-fA-F]{64}")
_KEY = re.compile(r"[!-~]+")  # printable ASCII without spaces: what an Authorization header carries
SHA256_HOW = "the key's SHA-256 in hex: printf %s 'KEY' | sha256sum"


def key_digest(key: str | bytes) -> bytes:
    """The SHA-256 digest (32 bytes) of an API key (a str as UTF-8)."""
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).digest()


@dataclass(frozen=True)
class TenantKey:
    """A tenant and the SHA-256 digest (32 bytes) of its API key."""

    tenant: Tenant
    digest: bytes


class KeyTable:
    """Which tenant an API key belongs to: every tenant's key digest, distinct."""

    def __init__(self, keys: Sequence[TenantKey]) -> None:
        if len({key.digest for key in keys}) != len(keys):
            raise ValueError("two tenants share one API key")
        self.keys = tuple(keys)

    def find(self, key: bytes) -> Tenant | None:
        """The tenant whose key is `key`, else None. Every digest is compared, each in constant time."""
        digest = key_digest(key)
        found = None
        for entry in self.keys:
            if hmac.compare_digest(digest, entry.digest):
                found = entry.tenant
        return found


def read_keys_file(path: str | Path) -> list[TenantKey]:
    """The tenants of keys file `path` (YAML, see the module docstring), in file order.

    Raises:
        LorakitError: no such file, not YAML, or a problem in a tenant (one line naming it and the fix).
    """
    file = Path(path)
    if not file.is_file():
        raise LorakitError(f"keys file {file} does not exist")
    try:
        data = yaml.load(file.read_text(encoding="utf-8"), Loader=_UniqueFieldLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" line {mark.line + 1}" if mark else ""
        raise LorakitError(f"keys file {file}{where} is not valid YAML: {error.problem or error.context}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise LorakitError(f"keys file {file} is not valid YAML: {' '.join(str(error).split())}") from None
    return parse_keys(data, f"keys file {file}")


def parse_keys(data: Any, source: str = "keys") -> list[TenantKey]:
    """The tenants of a keys file's content (`{"tenants": [{...}, ...]}`), checked; `source` starts each error."""
    if not isinstance(data, dict) or "tenants" not in data:
        raise LorakitError(f"{source} must hold one field, 'tenants': a list of tenants (name, key_sha256, adapters)")
    unknown = sorted(str(field) for field in data if field != "tenants")
    if unknown:
        raise LorakitError(f"{source}: unknown field {unknown[0]!r}; the file holds one field, 'tenants'")
    entries = data["tenants"]
    if not isinstance(entries, list) or not entries:
        raise LorakitError(f"{source}: 'tenants' must be a non-empty list, one item per tenant ('- name: ...')")
    keys = [_tenant_key(entry, index, source) for index, entry in enumerate(entries)]
    _check_distinct(keys, source)
    return keys


def _tenant_key(entry: Any, index: int, source: str) -> TenantKey:
    """One item of `tenants`, checked field by field."""
    if not isinstance(entry, dict):
        raise LorakitError(f"{source}: tenants[{index}] must be a mapping of fields ({', '.join(FIELDS)})")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise LorakitError(
            f"{source}: tenants[{index}] needs a name of 1-64 letters, digits, '.', '_' or '-' "
            f"(starting with a letter or digit); got {name!r}"
        )
    where = f"{source}: tenant {name!r}"
    if name in RESERVED_NAMES:
        raise LorakitError(f"{where}: the name is reserved (the metrics label of --api-key or of no key); rename it")
    unknown = sorted(str(field) for field in entry if field not in FIELDS)
    if unknown:
        raise LorakitError(f"{where}: unknown field {unknown[0]!r}; the fields are {', '.join(FIELDS)}")
    for permission in PERMISSIONS:
        if not isinstance(entry.get(permission, False), bool):
            raise LorakitError(f"{where}: {permission} must be true or false; got {entry[permission]!r}")
    tenant = Tenant(name, _patterns(entry.get("adapters", []), where), **{p: entry.get(p, False) for p in PERMISSIONS})
    if not (tenant.adapters or tenant.base or tenant.metrics):
        raise LorakitError(f"{where} may do nothing; give it adapter patterns, base: true or metrics: true")
    return TenantKey(tenant, _digest(entry, where))


def _patterns(patterns: Any, where: str) -> tuple[str, ...]:
    if not isinstance(patterns, list):
        raise LorakitError(f"{where}: adapters must be a list of name patterns, e.g. ['acme-*']; got {patterns!r}")
    for index, pattern in enumerate(patterns):
        if not isinstance(pattern, str) or not pattern.strip():
            raise LorakitError(f"{where}: adapters[{index}] is empty; write an adapter name or a pattern like 'acme-*'")
        if not _PATTERN.fullmatch(pattern):
            raise LorakitError(
                f"{where}: adapters[{index}] {pattern!r} matches no adapter name: use letters, digits, '.', '_', '-' "
                "and the wildcards * ? [...] (one pattern per list item)"
            )
    return tuple(patterns)


def _digest(entry: dict, where: str) -> bytes:
    """The key's digest, from `key` (hashed here) or `key_sha256` (exactly one of them). Errors never
    repeat the value: it may be a secret."""
    if "key" in entry and "key_sha256" in entry:
        raise LorakitError(f"{where} has both key and key_sha256; keep one")
    if "key" in entry:
        key = entry["key"]
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise LorakitError(f"{where}: key must be a string of printable ASCII without spaces (quote it in YAML)")
        return key_digest(key)
    if "key_sha256" not in entry:
        raise LorakitError(f"{where} has no key; add key_sha256: <{SHA256_HOW}> (or key: <the key>)")
    hex_digest = entry["key_sha256"]
    if not isinstance(hex_digest, str) or not _HEX.fullmatch(hex_digest):
        length = f"{len(hex_digest)} characters" if isinstance(hex_digest, str) else type(hex_digest).__name__
        raise LorakitError(f"{where}: key_sha256 must be 64 hexadecimal digits ({SHA256_HOW}); got {length}")
    return bytes.fromhex(hex_digest)


def _check_distinct(keys: Sequence[TenantKey], source: str) -> None:
    """Refuse two tenants with one name, or with one key."""
    names: dict[str, int] = {}
    digests: dict[bytes, str] = {}
    for index, entry in enumerate(keys):
        name = entry.tenant.name
        if name in names:
            where = f"tenants[{names[name]}] and [{index}]"
            raise LorakitError(f"{source}: tenant {name!r} appears twice ({where}); rename one")
        if entry.digest in digests:
            raise LorakitError(
                f"{source}: tenants {digests[entry.digest]!r} and {name!r} have the same key; give each its own"
            )
        names[name], digests[entry.digest] = index, name


class _UniqueFieldLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a field given twice in one mapping (PyYAML keeps the last
    silently, which would turn two `adapters:` lines into one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        """The mapping, once no key appears twice in it."""
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # PyYAML refuses it below, with its own message
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    problem=f"field {key!r} appears twice in one mapping; keep one", problem_mark=key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)
