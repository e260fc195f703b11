"""``recstack-data prepare|stats [data=ml100k] [split=random] [hydra overrides]``.

* ``prepare``: clean, index and split into ``<processed_root>/<dataset>/<config-hash>/`` (reused when it exists;
  ``force=true`` rebuilds), then print where it is.
* ``stats``: the same preparation if needed, then statistics of the split computed in SQL (DuckDB).

The subcommand is the first word; everything after it goes to a Hydra app over ``configs/prepare.yaml``. Errors in
the data or the config print one ``recstack-data: error: ...`` line and exit with status 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from recstack.config import config_dir

COMMANDS: tuple[str, ...] = ("prepare", "stats")
USAGE = (
    "usage: recstack-data {prepare,stats} [data=<name>] [split=random|chrono|loo|time] [key=value ...]\n"
    "  e.g. recstack-data prepare data=ml100k split=chrono data.clean.min_user_interactions=5\n"
    "       recstack-data stats data=events data.source.path=events.csv"
)
_CLEAR_ERRORS = (ValueError, TypeError, FileNotFoundError, KeyError, OmegaConfBaseException)


def run(command: str, cfg: DictConfig) -> str:
    """Do ``command`` for a composed prepare config and return what to print (testable without the CLI)."""
    from recstack.config import prepare_from_config
    from recstack.data.warehouse import format_stats, stats

    split = prepare_from_config(cfg, force=bool(cfg.get("force", False)))
    if command == "stats":
        return format_stats(stats(split.root))
    return f"{split!r}\n{split.root}"


def _message(exc: BaseException) -> str:
    # Hydra wraps errors raised by a `_target_`; the cause is what the user can act on.
    while isinstance(exc, InstantiationException) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, MissingMandatoryValue) and exc.full_key:
        return f"{exc.full_key} is required (it is ??? in the config): add {exc.full_key}=<value>"
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())  # one line


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, file=sys.stdout if args else sys.stderr)
        sys.exit(0 if args else 2)
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"recstack-data: error: unknown command {command!r}; use one of {list(COMMANDS)}", file=sys.stderr)
        print(USAGE, file=sys.stderr)
        sys.exit(2)

    @hydra.main(config_path=str(config_dir()), config_name="prepare", version_base="1.3")
    def app(cfg: DictConfig) -> None:
        try:
            out = run(command, cfg)
        except (*_CLEAR_ERRORS, InstantiationException) as exc:
            print(f"recstack-data {command}: error: {_message(exc)}", file=sys.stderr)
            sys.exit(2)
        print(out)

    sys.argv = [f"recstack-data-{command}", *rest]  # Hydra parses sys.argv; it must not see the subcommand
    app()


if __name__ == "__main__":
    main()
