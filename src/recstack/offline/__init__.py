"""The served pipeline run offline, above both serving and evaluation.

* :mod:`~recstack.offline.topk`: the pipeline's top-k for many users at once (no online store involved).
* :mod:`~recstack.offline.report`: that top-k judged by the full-ranking evaluator's metrics (``recstack-evaluate
  bundles=...``, the demo).
* :mod:`~recstack.offline.blend`: the ranker's blend weight tuned on validation, recorded in the bundle manifest
  (``recstack-export`` runs it after writing the bundle).
"""
