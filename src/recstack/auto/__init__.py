"""``recstack-auto``: the best model this stack finds for a dataset within a wall-clock budget, chosen on the
validation split, trained once more, read on test once and exported as a bundle.

Sits above :mod:`recstack.tuning` (each candidate is a ``recstack-tune`` study), :mod:`recstack.export` and
:mod:`recstack.offline`; only :mod:`recstack.cli` imports it. ``allocation`` (the budget's split, pure), ``candidates``
(names and configurations), ``search`` (the studies), ``two_stage`` (retrieval -> EASE re-rank, as served), ``finish``
(refit and export), ``report`` (HTML + JSON), ``auto`` (the whole job).
"""
