"""Validation-only hyper-parameter search with Optuna (``recstack-tune``): search spaces, studies, trials, outputs.

Sits above :mod:`recstack.training` (each trial is one :func:`recstack.training.train.train` run with
``evaluate_test=false``); nothing below imports it.
"""
