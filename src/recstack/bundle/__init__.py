"""The artifact boundary, torch-free: what export writes and what serving and offline evaluation read.

* :mod:`~recstack.bundle.layout`: file names, columns, hashing, :class:`~recstack.bundle.layout.BundleError`.
* :mod:`~recstack.bundle.contract`: the re-ranker's input/output contract (the one place its names and ranges live).
* :mod:`~recstack.bundle.manifest`: the typed, frozen ``manifest.json``.
* :mod:`~recstack.bundle.writer` / :mod:`~recstack.bundle.reader`: writing and verified reading of a bundle folder.
* :mod:`~recstack.bundle.session`: the ONNX Runtime session and scoring of the re-ranker.

Nothing here imports torch, Lightning or the packages that do (models, training, export); an import-linter contract in
``pyproject.toml`` keeps it so.
"""
