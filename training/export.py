"""``python training/export.py ...``: the same as ``recstack-export`` (see recstack.cli.export)."""

from recstack.cli.export import main

if __name__ == "__main__":
    main()
