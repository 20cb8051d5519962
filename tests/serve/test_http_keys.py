"""The keys file of `lorakit serve --keys`: a good file gives its tenants and finds them by key; every
kind of mistake is refused with one line naming the tenant, the field and the fix."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from lorakit.errors import LorakitError
from lorakit.serve.http.keys import KeyTable, key_digest, parse_keys, read_keys_file
from lorakit.serve.http.tenants import Tenant

ACME_SHA256 = hashlib.sha256(b"acme-key").hexdigest()
GOOD = f"""
tenants:
  - name: acme
    key_sha256: {ACME_SHA256.upper()}
    adapters: ["acme-*", "shared-summary"]
    manage: true
  - name: ops.team_2
    key: "ops-key"
    metrics: true
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    return path


def test_a_good_file_gives_its_tenants_in_order_and_finds_them_by_key(tmp_path: Path) -> None:
    keys = read_keys_file(write(tmp_path, GOOD))
    assert [key.tenant for key in keys] == [
        Tenant("acme", ("acme-*", "shared-summary"), base=False, manage=True, metrics=False),
        Tenant("ops.team_2", (), base=False, manage=False, metrics=True),
    ]
    assert keys[0].digest == key_digest("acme-key") == bytes.fromhex(ACME_SHA256)  # the hex in either case
    table = KeyTable(keys)
    assert table.find(b"acme-key") is keys[0].tenant
    assert table.find(b"ops-key") is keys[1].tenant
    for wrong in (b"acme-ke", b"acme-key ", b"", ACME_SHA256.encode()):  # the digest itself is no key
        assert table.find(wrong) is None


def test_a_key_table_refuses_two_tenants_with_one_key() -> None:
    """The keys file refuses that with a message (below); a table built in code, with an error."""
    first, second = (parse_keys({"tenants": [{"name": name, "key": "k", "metrics": True}]})[0] for name in "ab")
    with pytest.raises(ValueError, match="share one API key"):
        KeyTable([first, second])


def tenant(**fields) -> str:
    """A keys file with one tenant: acme with a key and an adapter pattern, `fields` replacing or
    adding fields (None removes one)."""
    entry = {"name": "acme", "key": "acme-key", "adapters": '["acme-*"]'} | fields
    lines = [f"{field}: {value}" for field, value in entry.items() if value is not None]
    return "tenants:\n  - " + "\n    ".join(lines) + "\n"


BAD_FILES = [  # (file text, what the one-line error says)
    ("tenants: [", "is not valid YAML"),
    ("", "must hold one field, 'tenants'"),
    ("- name: acme\n", "must hold one field, 'tenants'"),
    (tenant() + "version: 2\n", "unknown field 'version'; the file holds one field, 'tenants'"),
    ("tenants: []\n", "'tenants' must be a non-empty list"),
    ("tenants: [acme]\n", "tenants[0] must be a mapping of fields (name, key, key_sha256, adapters, base"),
    (tenant(name=None), "tenants[0] needs a name of 1-64 letters, digits"),
    (tenant(name="'a b'"), "tenants[0] needs a name of 1-64 letters, digits, '.', '_' or '-'"),
    (tenant(name="admin"), "tenant 'admin': the name is reserved"),
    (tenant(manages="true"), "tenant 'acme': unknown field 'manages'; the fields are name, key, key_sha256"),
    (tenant(manage="'yes'"), "tenant 'acme': manage must be true or false; got 'yes'"),
    (tenant(base=1), "tenant 'acme': base must be true or false; got 1"),
    (tenant(adapters="acme-*"), "tenant 'acme': adapters must be a list of name patterns, e.g. ['acme-*']"),
    (tenant(adapters='["acme-*", ""]'), "tenant 'acme': adapters[1] is empty; write an adapter name or a pattern"),
    (tenant(adapters='["acme-*, other-*"]'), "tenant 'acme': adapters[0] 'acme-*, other-*' matches no adapter name"),
    (tenant(adapters="[]"), "tenant 'acme' may do nothing; give it adapter patterns, base: true or metrics: true"),
    (tenant(key_sha256=ACME_SHA256), "tenant 'acme' has both key and key_sha256; keep one"),
    (tenant(key=None), "tenant 'acme' has no key; add key_sha256: <the key's SHA-256 in hex: printf %s 'KEY' |"),
    (tenant(key=12345), "tenant 'acme': key must be a string of printable ASCII without spaces (quote it"),
    (tenant(key="'two words'"), "tenant 'acme': key must be a string of printable ASCII without spaces"),
    (tenant(key=None, key_sha256="abc123"), "tenant 'acme': key_sha256 must be 64 hexadecimal digits (the key's"),
    (tenant(key=None, key_sha256="z" * 64), "tenant 'acme': key_sha256 must be 64 hexadecimal digits"),
    (tenant(key=None, key_sha256="[]"), "tenant 'acme': key_sha256 must be 64 hexadecimal digits"),
    (tenant() + "  - name: acme\n    key: other\n    base: true\n", "tenant 'acme' appears twice (tenants[0] and [1])"),
    (
        tenant() + f"  - name: beta\n    key_sha256: {ACME_SHA256}\n    base: true\n",
        "tenants 'acme' and 'beta' have the same key; give each its own",
    ),
    (tenant() + "    adapters: [more-*]\n", "line 5 is not valid YAML: field 'adapters' appears twice in one mapping"),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_every_mistake_is_one_line_naming_it(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(LorakitError) as refused:
        read_keys_file(path)
    assert str(refused.value).startswith(f"keys file {path}")
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)
    for secret in ("12345", "two words", "zzzz", "abc123"):  # a key's value never reaches the log
        assert secret not in str(refused.value)


def test_the_tenant_helper_writes_a_good_file(tmp_path: Path) -> None:
    """The bad files above differ from a good one only where they say."""
    (key,) = read_keys_file(write(tmp_path, tenant(base="true")))
    assert key.tenant == Tenant("acme", ("acme-*",), base=True) and key.digest == key_digest("acme-key")


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(LorakitError, match=r"keys file .*nope\.yaml does not exist"):
        read_keys_file(tmp_path / "nope.yaml")
