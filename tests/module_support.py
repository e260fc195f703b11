"""A script that is not part of the package (a benchmark, an example) loaded as a module by its path, for tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest


def load_module(path: Path, name: str | None = None, search_path: Path | None = None) -> ModuleType:
    """``path`` executed as module ``name`` (default: its stem), registered in ``sys.modules`` (dataclasses look
    their module up there) and reused on later calls; ``search_path`` is on ``sys.path`` while it runs, for a script
    that imports its neighbours (``benchmarks/`` scripts import ``invocation``)."""
    name = name or path.stem
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    with pytest.MonkeyPatch.context() as mp:
        if search_path is not None:
            mp.syspath_prepend(str(search_path))
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return module
