"""``recstack-keys`` as a real subprocess: create prints the key once and stores only its hash (mode 0600), list shows
names and roles and never a key or hash, revoke removes a key, mistakes exit non-zero with a message, and the file
it writes is the one a server's key ring reads."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from recstack.serving.api_keys import KeyRing, hash_key, read_key_file


def keys(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recstack.cli.keys", *args], capture_output=True, text=True, timeout=60
    )


def create(file: Path, role: str, *extra: str) -> str:
    out = keys("create", f"role={role}", f"file={file}", *extra)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 1, out.stdout  # the key alone on stdout: KEY=$(recstack-keys create ...) captures it
    return lines[0]


def test_create_prints_the_key_once_and_stores_only_its_hash(tmp_path: Path) -> None:
    file = tmp_path / "secrets" / "keys.yaml"
    out = keys("create", "role=recommend", f"file={file}", "name=backend")
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip()
    assert len(key) >= 43 and key not in out.stderr and "printed once" in out.stderr
    text = file.read_text()
    assert key not in text and hash_key(key) in text
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert stat.S_IMODE(file.parent.stat().st_mode) == 0o700
    [entry] = read_key_file(file)
    assert (entry.name, entry.role) == ("backend", "recommend") and entry.created.endswith("Z")
    # The file is what a server reads: the printed key verifies, with its role.
    ring = KeyRing.from_file(file, reload_s=5)
    assert ring.verify(key.encode()) == entry


def test_keys_are_random_and_names_default_per_role(tmp_path: Path) -> None:
    file = tmp_path / "keys.yaml"
    first, second = create(file, "collect"), create(file, "collect")
    create(file, "admin", "name=ops")
    assert first != second
    assert [(e.name, e.role) for e in read_key_file(file)] == [
        ("collect-1", "collect"),
        ("collect-2", "collect"),
        ("ops", "admin"),
    ]


def test_list_shows_names_and_roles_never_keys(tmp_path: Path) -> None:
    file = tmp_path / "keys.yaml"
    key = create(file, "admin", "name=ops")
    create(file, "collect", "name=storefront")
    out = keys("list", f"file={file}")
    assert out.returncode == 0, out.stderr
    assert "ops" in out.stdout and "storefront" in out.stdout and "admin" in out.stdout and "collect" in out.stdout
    assert key not in out.stdout and hash_key(key) not in out.stdout


def test_revoke_removes_the_key(tmp_path: Path) -> None:
    file = tmp_path / "keys.yaml"
    ops = create(file, "admin", "name=ops")
    site = create(file, "collect", "name=site")
    out = keys("revoke", "name=ops", f"file={file}")
    assert out.returncode == 0 and "revoked key 'ops'" in out.stdout
    assert [e.name for e in read_key_file(file)] == ["site"]
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    ring = KeyRing.from_file(file, reload_s=5)
    assert ring.verify(ops.encode()) is None and ring.verify(site.encode()) is not None
    again = keys("revoke", "name=ops", f"file={file}")
    assert again.returncode != 0 and "no key named 'ops'" in again.stderr and "site" in again.stderr


def test_concurrent_creates_keep_every_key(tmp_path: Path) -> None:
    """The file is rewritten under a lock: four creates at once leave four keys."""
    file = tmp_path / "keys.yaml"
    argv = [sys.executable, "-m", "recstack.cli.keys", "create", "role=collect", f"file={file}"]
    procs = [subprocess.Popen([*argv, f"name=k{i}"], stdout=subprocess.PIPE, text=True) for i in range(4)]
    printed = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    ring = KeyRing.from_file(file, reload_s=5)
    assert sorted(e.name for e in ring.entries) == ["k0", "k1", "k2", "k3"]
    assert all(ring.verify(k.encode()) is not None for k in printed)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "expected one of create, list, revoke"),
        (["create", "role=root", "file=X"], "not one of"),
        (["create", "file=X"], "missing role="),
        (["create", "role=admin", "file=X", "colour=red"], "unexpected argument 'colour=red'"),
        (["create", "role=admin", "file=X", "name=has space"], "not valid"),
        (["create", "role=admin", "file=X", "name=a", "name=b"], "given twice"),
        (["list"], "missing file="),
        (["revoke", "file=X"], "missing name="),
    ],
)
def test_mistakes_exit_2_and_say_what_is_wrong(tmp_path: Path, args: list[str], message: str) -> None:
    args = [a.replace("file=X", f"file={tmp_path / 'keys.yaml'}") for a in args]
    out = keys(*args)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert not (tmp_path / "keys.yaml").exists()


def test_existing_name_and_missing_or_broken_file(tmp_path: Path) -> None:
    file = tmp_path / "keys.yaml"
    create(file, "admin", "name=ops")
    dup = keys("create", "role=collect", f"file={file}", "name=ops")
    assert dup.returncode == 2 and "exists" in dup.stderr and dup.stdout == ""
    missing = keys("list", f"file={tmp_path / 'nope.yaml'}")
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    file.write_text("keys: [oops]\n")
    broken = keys("create", "role=admin", f"file={file}")
    assert broken.returncode == 1 and "exactly the fields" in broken.stderr and broken.stdout == ""
    assert file.read_text() == "keys: [oops]\n"  # a broken file is never overwritten


def test_help() -> None:
    out = keys("--help")
    assert out.returncode == 0 and "recstack-keys create role=" in out.stdout
