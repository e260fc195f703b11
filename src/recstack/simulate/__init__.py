"""``recstack-simulate``: replayed users of a prepared split's test stage visit a running service, click, and their
events flow back through the collector into the lake, where the online metrics are computed and set beside the offline
evaluator's figures for each arm's bundle.

* :mod:`~recstack.simulate.visitors`: the test users (all, or a seeded sample) and their held-out items;
* :mod:`~recstack.simulate.click_model`: which recommended items a user clicks (position-based, seeded);
* :mod:`~recstack.simulate.traffic`: the visits over HTTP (consent, ``/recommend``, ``/events``), bounded in flight;
* :mod:`~recstack.simulate.lake_sync`: waiting until the lake consumer has stored the run;
* :mod:`~recstack.simulate.online`: each arm's CTR@k, MAP@k and NDCG@k as the monitor computes them from the lake,
  and each impression judged from the simulator's own records (which the monitor's figures must equal);
* :mod:`~recstack.simulate.offline`: each bundle's offline figures (the served pipeline judged by the full-ranking
  evaluator on the test stage), per user;
* :mod:`~recstack.simulate.compare`: per arm, online CTR@k and MAP@k with their confidence intervals (the monitor's
  bootstrap over users) beside the offline MAP@k, and whether they agree;
* :mod:`~recstack.simulate.run`: all of it, once.

**Why online and offline MAP@k must agree.** Online MAP@k is AP@k of each served list against the distinct items the
user interacted with after it; offline MAP@k is AP@k of the pipeline's top k against the user's test items, with
train and validation items masked; both divide by min(|relevant|, k) (recstack.evaluation.metrics). They are the same
number for the same users when the four things that decide them are the same:

1. *the list*: the service runs the very pipeline the offline evaluator runs (recstack.offline.topk), from the same
   bundle, at the same k, with the re-ranker's context fixed as offline (hour 12, Monday: ``context`` in the config),
   the same candidate count and search settings (the service's defaults), and nothing in the user's recent activity
   that the offline run lacks (a replayed user visits once; the demo serves the simulation with Redis keys of its own);
2. *the exclusions*: the bundle's seen-items lists must hold train + validation (``recstack-export seen=train_valid``),
   which is what the evaluator masks on the test stage; a bundle whose seen lists hold train only recommends
   validation items back and scores lower online;
3. *the relevant set*: the visit posts every held-out item after the impression (clicks for the clicked ones, ratings
   for the rest), so what the user "went on to interact with" is exactly their test set, whatever the click model;
   event times are the collector's receive times, after the answer, so none is dropped as earlier than the impression;
4. *the users*: the offline figure is read on exactly the users the arm served (each user's arm is fixed by the
   experiment's hash).

Then each user's online AP@k equals their offline AP@k and so do the arm means: the printed offline figure on the same
users lies inside the online interval (exactly on the online figure, in fact). The interval (bootstrap over users)
states the sampling error of the arm's users as a sample of the test population: the offline figure on all test
users is expected inside it too, up to that sampling error. A mismatch means one of the four differs, e.g. a bundle
exported with train-only seen lists, a service with other ``n_candidates``, or stale recent activity in Redis.
CTR@k is the share of impressions with a click in the top k: with every position examined (the default click model) it
equals the bundle's offline HitRate@k on the same users.
"""
