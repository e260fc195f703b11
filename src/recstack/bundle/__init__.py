"""The artifact boundary, torch-free: what export writes and what serving and offline evaluation read.

* :mod:`~recstack.bundle.layout`: file names, columns, hashing, :class:`~recstack.bundle.layout.BundleError`.
* :mod:`~recstack.bundle.contract`: the re-ranker's input/output contract (the one place its names and ranges live).
* :mod:`~recstack.bundle.manifest`: the typed, frozen ``manifest.json``.
* :mod:`~recstack.bundle.writer` / :mod:`~recstack.bundle.reader`: writing and verified reading of a bundle folder.
* :mod:`~recstack.bundle.session`: the ONNX Runtime session and scoring of the re-ranker.
* :mod:`~recstack.bundle.content`, :mod:`~recstack.bundle.text_encoder`: the content section and its ONNX MiniLM.
* :mod:`~recstack.bundle.item_item`: the item-item (EASE) re-ranker's weights.
* :mod:`~recstack.bundle.tfidf`: a content bundle's TF-IDF vocabulary as plain data, and the one TF-IDF encoding
  function the content model and serving share.
* :mod:`~recstack.bundle.content_encoding`: how a content model's retrieval vector is made from an item's text blocks
  (tfidf, minilm, both), shared by the model and by live items.

Nothing here imports torch, Lightning or the packages that do (models, training, export); an import-linter contract in
``pyproject.toml`` keeps it so.
"""
