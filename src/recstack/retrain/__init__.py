"""``recstack-retrain``: the loop that keeps a deployed bundle current, one command for a scheduler (cron, Airflow).

prepare the window's split -> find the bundle now serving (asking the service when one is configured) -> build the
fresh hold-out -> train the candidate (and its Wide & Deep re-ranker, with ``ranker``) -> judge it and the bundle now
serving on that hold-out through the served pipeline -> gate -> refit on every interaction -> export -> register ->
reload.

``cycle`` runs the steps (each one timed and logged, each failure class its own exit code: ``outcome``); ``holdout``
judges any bundle on the window's newest interactions by id; ``gate`` decides; ``registry`` keeps every run in MLflow's
local tracking store; ``reload`` asks the service which bundle it serves and to load the new one; ``report`` plots the runs. The CLI is
``recstack.cli.retrain`` (``configs/retrain.yaml``).
"""
