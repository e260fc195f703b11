"""``recstack-keys``: create, list and revoke the API keys a recstack server accepts.

    recstack-keys create role=<collect|recommend|analyst|admin> file=<secret file> [name=<name>]
    recstack-keys list file=<secret file>
    recstack-keys revoke name=<name> file=<secret file>

``create`` prints the new key once, alone on stdout (``KEY=$(recstack-keys create ...)`` captures it), and stores only
its SHA-256 with the role, the name and the time; the file is rewritten atomically with mode 0600. A running server
picks up a change within ``api_keys_reload_s`` (revoking needs no restart). There is no default file: keep it outside
the repository (``make demo`` puts a development key under ``outputs/secrets/``, which git ignores).

Not a Hydra app on purpose: three plain commands that must start fast and never write a Hydra output folder.
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from recstack.serving.api_keys import ROLES, KeyEntry, KeyFileError, new_key, read_key_file, write_key_file

USAGE = __doc__.split("\n\n")[1].strip("\n") if __doc__ else ""
EXIT_USAGE = 2
EXIT_FAILED = 1
ARGUMENTS = {"create": ({"role", "file"}, {"name"}), "list": ({"file"}, set()), "revoke": ({"name", "file"}, set())}


class UsageError(ValueError):
    pass


def parse(argv: Sequence[str]) -> tuple[str, dict[str, str]]:
    """``create role=admin file=x`` -> ``("create", {"role": "admin", "file": "x"})``; UsageError says what is wrong."""
    if not argv or argv[0] not in ARGUMENTS:
        raise UsageError(f"expected one of {', '.join(ARGUMENTS)} as the first argument")
    command, required, optional = argv[0], *ARGUMENTS[argv[0]]
    values: dict[str, str] = {}
    for arg in argv[1:]:
        name, sep, value = arg.partition("=")
        if not sep or name not in required | optional:
            allowed = ", ".join(f"{n}=..." for n in sorted(required | optional))
            raise UsageError(f"{command}: unexpected argument {arg!r}; it takes {allowed}")
        if name in values:
            raise UsageError(f"{command}: {name}= given twice")
        if not value:
            raise UsageError(f"{command}: {name}= is empty")
        values[name] = value
    missing = sorted(required - set(values))
    if missing:
        raise UsageError(f"{command}: missing {', '.join(f'{m}=...' for m in missing)}")
    return command, values


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside the key file, so two ``create`` calls at once cannot drop each other's key."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def entries_of(path: Path, *, must_exist: bool) -> list[KeyEntry]:
    if not path.exists() and not must_exist:
        return []
    return read_key_file(path)


def create(path: Path, role: str, name: str | None) -> str:
    """Add a key; returns the key (the only time it exists outside the client that receives it)."""
    with locked(path):
        entries = entries_of(path, must_exist=False)
        if name is None:
            taken = {e.name for e in entries}
            name = next(f"{role}-{i}" for i in range(1, len(entries) + 2) if f"{role}-{i}" not in taken)
        elif any(e.name == name for e in entries):
            raise UsageError(f"a key named {name!r} exists in {path}; revoke it first or choose another name")
        token, entry = new_key(role, name)
        write_key_file(path, [*entries, entry])
    print(f"created key {name!r} (role {role}) in {path}. It is printed once, below; store it now.", file=sys.stderr)
    return token


def revoke(path: Path, name: str) -> KeyEntry:
    with locked(path):
        entries = entries_of(path, must_exist=True)
        kept = [e for e in entries if e.name != name]
        if len(kept) == len(entries):
            names = ", ".join(e.name for e in entries) or "none"
            raise UsageError(f"no key named {name!r} in {path} (keys: {names})")
        write_key_file(path, kept)
    return next(e for e in entries if e.name == name)


def listing(path: Path) -> str:
    entries = entries_of(path, must_exist=True)
    if not entries:
        return f"no keys in {path}"
    width = max(4, *(len(e.name) for e in entries))
    lines = [f"{'name':<{width}}  {'role':<9}  created"]
    lines += [f"{e.name:<{width}}  {e.role:<9}  {e.created}" for e in entries]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"], ["help"]):
        print(USAGE)
        return 0
    try:
        command, values = parse(argv)
        path = Path(values["file"]).expanduser()
        if command == "create":
            if values["role"] not in ROLES:
                raise UsageError(f"role={values['role']} is not one of {', '.join(ROLES)}")
            print(create(path, values["role"], values.get("name")))
        elif command == "list":
            print(listing(path))
        else:
            entry = revoke(path, values["name"])
            print(f"revoked key {entry.name!r} (role {entry.role}) in {path}; servers stop accepting it on reload")
    except UsageError as error:
        print(f"recstack-keys: {error}\n\nusage:\n{USAGE}", file=sys.stderr)
        return EXIT_USAGE
    except (KeyFileError, OSError) as error:
        print(f"recstack-keys: {error}", file=sys.stderr)
        return EXIT_FAILED
    except ValueError as error:  # a name or role the key file would not accept
        print(f"recstack-keys: {error}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
