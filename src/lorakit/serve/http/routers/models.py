"""The models a client may name, and adapter management.

GET    /v1/models          the base (and whether it needs an adapter) and every adapter (loaded, or
                           waiting in the adapters folder)
POST   /v1/adapters        {"name"}: load from the adapters folder now (names only, never paths)
DELETE /v1/adapters/{name} unload (the folder stays on disk)

vLLM's own pair, for clients written against it (plain-text "Success: ..." answers, as vLLM's):
POST   /v1/load_lora_adapter    {"lora_name", "lora_path"}: a folder inside the adapters folder
                                (403 elsewhere), served under `lora_name`; 400 if that name is loaded
POST   /v1/unload_lora_adapter  {"lora_name"}: unload it
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from lorakit.errors import LorakitError
from lorakit.serve.engine.adapters import is_name
from lorakit.serve.http.calls import fetch_adapter
from lorakit.serve.http.deps import EngineDep, StartedDep
from lorakit.serve.http.errors import ApiError
from lorakit.serve.http.schemas import AdapterLoadRequest, LoraLoadRequest, LoraUnloadRequest

router = APIRouter()


@router.get("/v1/models")
async def models(engine: EngineDep, started: StartedDep) -> dict:
    """OpenAI's model list: the base (with its PEFT task_type, and `needs_adapter`: true when it
    cannot answer on its own, a classifier without a trained head), then each adapter with its parent."""
    base_id = engine.registry.base_model
    base = {"id": base_id, "object": "model", "created": started, "owned_by": "lorakit"}
    data = [{**base, "task_type": engine.task_type, "loaded": True, "needs_adapter": engine.needs_adapter}]
    for entry in await asyncio.to_thread(engine.registry.list):
        data.append(
            {
                **base,
                "id": entry["name"],
                "parent": base_id,
                "loaded": entry["loaded"],
                "task_type": entry["task_type"],
                "label_names": entry["label_names"],
            }
        )
    return {"object": "list", "data": data}


@router.post("/v1/adapters")
async def load_adapter(body: AdapterLoadRequest, engine: EngineDep) -> dict:
    """Load adapter `name` now (404 unknown, 409 unfit for this server); what it is, once loaded."""
    info = await fetch_adapter(engine, body.name)
    return {
        "name": info.name,
        "loaded": True,
        "task_type": info.task_type,
        "nbytes": info.nbytes,
        "label_names": list(info.label_names) if info.label_names else None,
        "quantize": info.quantize,
    }


@router.delete("/v1/adapters/{name}")
async def unload_adapter(name: str, engine: EngineDep) -> dict:
    """Unload adapter `name` (404 when not loaded, 409 while the running batch uses it)."""
    try:
        await asyncio.to_thread(engine.registry.unload, name)
    except LorakitError as error:
        if not is_name(name):
            raise ApiError(400, "invalid_adapter_name", str(error)) from None
        loaded = {entry["name"] for entry in await asyncio.to_thread(engine.registry.list) if entry["loaded"]}
        status, code = (409, "adapter_busy") if name in loaded else (404, "adapter_not_loaded")
        raise ApiError(status, code, str(error)) from None
    return {"name": name, "loaded": False}


@router.post("/v1/load_lora_adapter", response_class=PlainTextResponse)
async def load_lora_adapter(body: LoraLoadRequest, engine: EngineDep) -> str:
    """vLLM's load: the folder `lora_path`, confined to the adapters folder, as `lora_name`."""
    folder = _inside_adapters_folder(engine.registry.adapters_dir, body.lora_path)
    loaded = {entry["name"] for entry in await asyncio.to_thread(engine.registry.list) if entry["loaded"]}
    if body.lora_name in loaded:
        if not body.load_inplace:
            raise ApiError(400, "adapter_loaded", f"the LoRA adapter {body.lora_name!r} has already been loaded")
        await unload_adapter(body.lora_name, engine)
    if not folder.is_dir():
        raise ApiError(404, "adapter_not_found", f"no adapter folder at lora_path {body.lora_path}")
    try:
        await asyncio.to_thread(engine.registry.load, folder, body.lora_name)
    except LorakitError as error:  # a bad name, or a folder that is no adapter of this base
        code = "invalid_adapter_name" if not is_name(body.lora_name) else "adapter_unfit"
        raise ApiError(400, code, str(error)) from None
    return f"Success: LoRA adapter '{body.lora_name}' added successfully."


@router.post("/v1/unload_lora_adapter", response_class=PlainTextResponse)
async def unload_lora_adapter(body: LoraUnloadRequest, engine: EngineDep) -> str:
    """vLLM's unload of `lora_name` (404 when not loaded, 409 while a running batch uses it)."""
    await unload_adapter(body.lora_name, engine)
    return f"Success: LoRA adapter '{body.lora_name}' removed successfully."


def _inside_adapters_folder(adapters: Path | None, path: str) -> Path:
    """`path` resolved (links followed; relative to the adapters folder) if it lies inside it.

    Raises:
        ApiError: 403 when the server has no adapters folder or the path leads out of it.
    """
    if adapters is None:
        raise ApiError(403, "path_forbidden", "this server has no adapters folder; it loads no adapter by path")
    folder = (adapters / Path(path).expanduser()).resolve()
    if not folder.is_relative_to(adapters):
        raise ApiError(403, "path_forbidden", f"lora_path must lie inside the adapters folder {adapters}")
    return folder
