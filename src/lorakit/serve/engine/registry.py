"""The adapters a server holds on its one base model: loaded on first use, evicted by a byte budget.

    get("sst2") ──► loaded? ── yes ──► most recently used, return it
                        └── no ──► adapters_dir/sst2 (or its explicit path) ──► checks ──► load onto
                                   the base under a fresh name ──► pack it into the mixed-batch
                                   slots ──► evict least recently used adapters, not held by the
                                   running batch, until the budget holds

Each adapter lives on the base model as a lorakit adapter under a fresh name (`serve0`, `serve1`,
…, never reused), so public names need not be valid lorakit names and a reloaded adapter never
meets stale state. It is also packed once into `slots` (`AdapterSlots`), which every mixed batch
indexes, so no batch copies adapter weights.

Two locks: `model_lock` serialises everything that changes or runs the model (loading, unloading,
eviction, a batch's forward passes, which take it through `hold`); a private lock guards the
bookkeeping, so listing and metrics never wait for a batch.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from torch import nn

from lorakit.artifacts import find_artifact_folder, read_artifact_info
from lorakit.errors import LorakitError
from lorakit.lora import delete_adapter, load_adapter, read_adapter, set_adapter
from lorakit.lora.io import CONFIG_NAME
from lorakit.models import resolve_model
from lorakit.quant import is_quantized
from lorakit.serve.engine.adapters import (
    AdapterInfo,
    adapter_nbytes,
    check_name,
    check_servable,
    folder_in,
    heads_sized_for,
    is_name,
    label_names,
)
from lorakit.serve.kernels.slots import AdapterSlots
from lorakit.task_kind import TaskKind

DEFAULT_MAX_BYTES = 256 * 2**20
logger = logging.getLogger("lorakit.serve")


class AdapterRegistry:
    """Adapters on one shared base model, by name, within `max_bytes` of adapter tensors.

    Args:
        model: the base model (eval mode); adapters are added to and removed from it in place.
        base_model: the name the base was loaded by (packaged name, Hub id or folder); an adapter
            trained for another base is refused.
        adapters_dir: folder whose subfolders are adapters (PEFT folders or `lorakit train` run
            folders), loaded by subfolder name on first request. None: only explicit paths.
        max_bytes: budget for the adapters' tensors in memory; least recently used adapters are
            evicted beyond it (they reload on their next request).
        kind: the server's task (None: any); adapters whose PEFT task_type is another kind's are refused.
        pack_dtype: dtype of the packed slots (None: the adapters' own); bfloat16 for a server
            running under bf16 autocast.
    """

    def __init__(
        self,
        model: nn.Module,
        base_model: str,
        *,
        adapters_dir: str | Path | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        kind: TaskKind | None = None,
        pack_dtype: torch.dtype | None = None,
    ) -> None:
        if max_bytes <= 0:
            raise LorakitError(f"max_bytes must be a positive number of bytes; got {max_bytes}")
        self.model = model
        self.base_model = base_model
        self.adapters_dir = Path(adapters_dir).expanduser().resolve() if adapters_dir is not None else None
        if self.adapters_dir is not None and not self.adapters_dir.is_dir():
            raise LorakitError(f"adapters folder {adapters_dir} does not exist")
        self.max_bytes = max_bytes
        self.kind = kind
        self.model_lock = threading.RLock()
        self._lock = threading.Lock()
        self._loaded: OrderedDict[str, AdapterInfo] = OrderedDict()  # least recently used first
        self._paths: dict[str, Path] = {}  # adapters loaded by explicit path
        self._pins: dict[str, int] = {}
        self._model_names = (f"serve{i}" for i in itertools.count())
        self.slots = AdapterSlots(model, dtype=pack_dtype)
        self._server_bases = (base_model, resolve_model(base_model), getattr(model.config, "_name_or_path", "") or "")
        self.counters = {"loads": 0, "evictions": 0, "hits": 0, "misses": 0}

    def get(self, name: str) -> AdapterInfo:
        """Adapter `name`, loading it (from its explicit path or the adapters folder) if needed.

        Raises:
            LorakitError: a bad name, no such adapter, or one that does not fit this base.
        """
        check_name(name)
        with self._lock:
            info = self._touch(name)
        if info is not None:
            return info
        with self.model_lock:
            return self._get_locked(name)

    def load(self, name_or_path: str | Path, name: str | None = None) -> AdapterInfo:
        """Load an adapter now: a name in the adapters folder, or a folder path (named `name`, by
        default the folder's own name, or the run's name for a run's `adapter/` folder).

        Paths are trusted (an operator's choice); expose only names to clients. A relative path
        needs a `./` so that it is not read as a name.
        """
        if isinstance(name_or_path, str) and is_name(name_or_path) and name is None:
            return self.get(name_or_path)
        folder = find_artifact_folder(Path(name_or_path).expanduser().resolve())
        if name is None:
            name = folder.parent.name if folder.name == "adapter" else folder.name
        check_name(name)
        with self.model_lock:
            with self._lock:
                loaded = self._loaded.get(name)
            if loaded is not None:
                if loaded.path == folder:
                    return self.get(name)
                raise LorakitError(f"an adapter named {name!r} is already loaded from {loaded.path}; unload it first")
            info = self._load_locked(name, folder)
            with self._lock:
                self._paths[name] = folder
            return info

    def unload(self, name: str) -> None:
        """Remove adapter `name` from memory and forget its explicit path (the folder stays on disk)."""
        check_name(name)
        with self.model_lock:
            with self._lock:
                if name not in self._loaded:
                    raise LorakitError(f"adapter {name!r} is not loaded; loaded: {', '.join(self._loaded) or 'none'}")
                if self._pins.get(name):
                    raise LorakitError(f"adapter {name!r} is in use by a running request; retry when it finishes")
                info = self._loaded.pop(name)
                self._paths.pop(name, None)
            self._drop(info)

    def list(self) -> list[dict]:
        """Every adapter known: loaded ones (most recent last) and those in the adapters folder.

        Each entry: {"name", "loaded", "path", "task_type", "nbytes", "label_names", "quantize"};
        the last four are None for an adapter that is not loaded.
        """
        with self._lock:
            entries = {
                name: {
                    "name": name,
                    "loaded": True,
                    "path": str(info.path),
                    "task_type": info.task_type,
                    "nbytes": info.nbytes,
                    "label_names": list(info.label_names) if info.label_names else None,
                    "quantize": info.quantize,
                }
                for name, info in self._loaded.items()
            }
            known = dict(self._paths)
        for name in self._folder_names():
            known.setdefault(name, self.adapters_dir / name)
        for name, path in sorted(known.items()):
            unloaded = {
                "loaded": False,
                "path": str(path),
                "task_type": None,
                "nbytes": None,
                "label_names": None,
                "quantize": None,
            }
            entries.setdefault(name, {"name": name, **unloaded})
        return list(entries.values())

    def stats(self) -> dict:
        """Counters for metrics: loads, evictions, hits, misses, plus bytes used and the budget."""
        with self._lock:
            return {
                **self.counters,
                "loaded": len(self._loaded),
                "bytes": sum(info.nbytes for info in self._loaded.values()),
                "max_bytes": self.max_bytes,
            }

    @contextlib.contextmanager
    def hold(self, names: Iterable[str | None]) -> Iterator[dict[str, AdapterInfo | LorakitError]]:
        """Load and pin the adapters one batch uses, and hold `model_lock` while the batch runs.

        Yields name → AdapterInfo, or → the LorakitError that loading it raised (the batcher
        fails those requests only). Pinned adapters are never evicted, even when together they
        exceed the budget; eviction catches up when the block ends.
        """
        with self.model_lock:
            held: dict[str, AdapterInfo | LorakitError] = {}
            for name in dict.fromkeys(n for n in names if n is not None):
                try:
                    held[name] = self.pin(name)
                except LorakitError as error:
                    held[name] = error
            try:
                yield held
            finally:
                for name, info in held.items():
                    if isinstance(info, AdapterInfo):
                        self.unpin(name, evict=False)
                self._evict_over_budget()

    def pin(self, name: str) -> AdapterInfo:
        """Adapter `name` (loaded if needed), kept loaded until as many `unpin(name)` calls: a
        request that runs across many steps pins its adapter for its whole life.

        Raises:
            LorakitError: as `get`.
        """
        with self.model_lock:
            info = self.get(name)
            with self._lock:
                self._pins[name] = self._pins.get(name, 0) + 1
            return info

    def unpin(self, name: str, evict: bool = True) -> None:
        """Undo one `pin(name)`; then (`evict`) unload the least recently used adapters over budget."""
        with self._lock:
            self._pins[name] -= 1
            if not self._pins[name]:
                del self._pins[name]
        if evict:
            with self.model_lock:
                self._evict_over_budget()

    def _touch(self, name: str) -> AdapterInfo | None:
        """The loaded adapter, now most recently used (caller holds `_lock`)."""
        info = self._loaded.get(name)
        if info is not None:
            self._loaded.move_to_end(name)
            self.counters["hits"] += 1
        return info

    def _get_locked(self, name: str) -> AdapterInfo:
        with self._lock:
            info = self._touch(name)
            path = self._paths.get(name)
        if info is not None:
            return info
        with self._lock:
            self.counters["misses"] += 1
        if path is None:
            if self.adapters_dir is None:
                raise LorakitError(f"adapter {name!r} is not loaded and this server has no adapters folder")
            path = folder_in(self.adapters_dir, name)
        return self._load_locked(name, path)

    def _load_locked(self, name: str, folder: Path) -> AdapterInfo:
        """Check and load the adapter in `folder` as `name`, then evict down to the budget."""
        config, tensors = read_adapter(folder)
        info = read_artifact_info(folder)
        check_servable(name, config, info, self._server_bases, self.kind)
        model_name = next(self._model_names)
        with heads_sized_for(self.model, config, tensors):
            load_adapter(self.model, folder, adapter_name=model_name)
        set_adapter(self.model, None)  # outside mixed batches the model stays the plain base
        try:
            self.slots.add(model_name)
            loaded = AdapterInfo(
                name=name,
                model_name=model_name,
                path=folder,
                task_type=config.task_type,
                base_model=info.base_model or config.base_model_name_or_path,
                label_names=label_names(self.model, model_name, config, info, name),
                max_length=info.max_length,
                nbytes=adapter_nbytes(self.model, model_name) + self.slots.slot_nbytes(model_name),
                quantize=info.quantize,
            )
            if loaded.nbytes > self.max_bytes:
                raise LorakitError(
                    f"adapter {name!r} takes {loaded.nbytes:,} bytes, more than the whole adapter budget "
                    f"({self.max_bytes:,} bytes); raise max_bytes"
                )
        except LorakitError:
            if model_name in self.slots:
                self.slots.remove(model_name)
            delete_adapter(self.model, model_name)
            raise
        if loaded.quantize and not is_quantized(self.model):
            logger.warning(
                "adapter %r was trained on a %s-quantized base; it is served on this unquantized base, "
                "so its outputs differ slightly from training",
                name,
                loaded.quantize,
            )
        with self._lock:
            self._loaded[name] = loaded
            self.counters["loads"] += 1
        self._evict_over_budget()
        return loaded

    def _evict_over_budget(self) -> None:
        """Drop least recently used, unpinned adapters until the budget holds (caller holds `model_lock`)."""
        while True:
            with self._lock:
                used = sum(info.nbytes for info in self._loaded.values())
                # The most recent adapter stays: it was loaded to be used now.
                candidates = [n for n in list(self._loaded)[:-1] if not self._pins.get(n)]
                if used <= self.max_bytes or not candidates:
                    return
                victim = self._loaded.pop(candidates[0])
                self.counters["evictions"] += 1
            self._drop(victim)

    def _drop(self, info: AdapterInfo) -> None:
        """Take a loaded adapter off the model and out of the slots (caller holds `model_lock`)."""
        self.slots.remove(info.model_name)
        delete_adapter(self.model, info.model_name)

    def _folder_names(self) -> list[str]:
        if self.adapters_dir is None:
            return []
        names = []
        for child in sorted(self.adapters_dir.iterdir()):
            if not is_name(child.name) or not child.resolve().is_relative_to(self.adapters_dir):
                continue
            if (child / CONFIG_NAME).is_file() or (child / "adapter" / CONFIG_NAME).is_file():
                names.append(child.name)
        return names
