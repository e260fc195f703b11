"""``python training/evaluate.py ...``: the same as ``recstack-evaluate`` (see recstack.cli.evaluate)."""

from recstack.cli.evaluate import main

if __name__ == "__main__":
    main()
