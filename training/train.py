"""``python training/train.py model=mf data=ml100k``: the same as ``recstack-train`` (see recstack.cli.train)."""

from recstack.cli.train import main

if __name__ == "__main__":
    main()
