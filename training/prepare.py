"""``python training/prepare.py prepare data=ml100k``: the same as ``recstack-data`` (see recstack.cli.data)."""

from recstack.cli.data import main

if __name__ == "__main__":
    main()
