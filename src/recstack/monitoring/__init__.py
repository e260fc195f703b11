"""Online monitoring (``recstack-monitor``): the lake's impressions joined to the events that followed them.

* :mod:`~recstack.monitoring.spec`: the typed settings (attribution and outcome windows, K, alert rules, A/B tests);
* :mod:`~recstack.monitoring.lake_tables`: the impressions and events of a window loaded into DuckDB;
* :mod:`~recstack.monitoring.attribution`: which impression a click or purchase came from, and what each user went on
  to interact with after an impression (one SQL text for DuckDB and, through
  :mod:`~recstack.monitoring.monitor_spark`, for Spark: ``engine=spark``);
* :mod:`~recstack.monitoring.online_metrics`: CTR@k, conversion, online MAP@K / NDCG@K (the offline evaluator's own
  metric functions), coverage and popularity per day, bundle, experiment arm and segment;
* :mod:`~recstack.monitoring.drift`: population stability index of served scores and item popularity;
* :mod:`~recstack.monitoring.significance`: per-arm comparisons (two-proportion z-test, bootstrap over users);
* :mod:`~recstack.monitoring.alerts`: the rules that make a run fail for schedulers;
* :mod:`~recstack.monitoring.job`: one run end to end; :mod:`~recstack.monitoring.report` and
  :mod:`~recstack.monitoring.prometheus` write what people and Prometheus read.
"""
