"""Hybrid recommenders: several base models ("parts") combined behind the one ``Recommender`` contract.

Each hybrid trains its parts on the training split, fits its weights, threshold or meta-model on the validation split
only, and is then scored like any model by :func:`recstack.evaluation.evaluator.evaluate` (the test split is read
once, by the evaluator). ``parts.py`` builds and normalises the parts; one file per hybrid:

* ``weighted.py``  per-user normalised part scores, summed with weights tuned on validation NDCG@10;
* ``switching.py`` one part for users with a short training history, another for the rest (threshold tuned);
* ``cascade.py``   one part retrieves the top N, a second re-ranks them (blend weight tuned);
* ``stacking.py``  a LightGBM lambdarank meta-model over per-candidate features of every part.

The package sits above ``training`` (a deep part without a run folder is trained in-process) and beside ``export``
and ``serving``.
"""
