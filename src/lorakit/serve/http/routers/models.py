"""The models a client may name, and adapter management.

GET    /v1/models          the base (and whether it needs an adapter) and every adapter (loaded, or
                           waiting in the adapters folder)
POST   /v1/adapters        {"name"}: load from the adapters folder now (names only, never paths)
DELETE /v1/adapters/{name} unload (the folder stays on disk)

vLLM's own pair, for clients written against it (plain-text "Success: ..." answers, as vLLM's):
POST   /v1/load_lora_adapter    {"lora_name", "lora_path"}: a folder inside the adapters folder
                                (403 elsewhere), served under `lora_name`; 400 if that name is loaded
POST   /v1/unload_lora_adapter  {"lora_name"}: unload it

A tenant sees and names only the adapters its patterns match (the base only with the base
permission); loading and unloading need the manage permission (403 without). An adapter outside
its patterns answers as a missing one, and so does a vLLM `lora_path` in another adapter's folder.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from lorakit.errors import LorakitError
from lorakit.serve.engine.adapters import is_name
from lorakit.serve.http.calls import fetch_adapter
from lorakit.serve.http.deps import EngineDep, StartedDep, TenantDep
from lorakit.serve.http.errors import ApiError
from lorakit.serve.http.schemas import AdapterLoadRequest, LoraLoadRequest, LoraUnloadRequest
from lorakit.serve.http.tenants import not_loaded

router = APIRouter()


@router.get("/v1/models")
async def models(engine: EngineDep, started: StartedDep, tenant: TenantDep) -> dict:
    """OpenAI's model list of what `tenant` may use: the base (with its PEFT task_type, and
    `needs_adapter`: true when it cannot answer on its own, a classifier without a trained head),
    then each adapter with its parent."""
    base_id = engine.registry.base_model
    base = {"id": base_id, "object": "model", "created": started, "owned_by": "lorakit"}
    listed = {**base, "task_type": engine.task_type, "loaded": True, "needs_adapter": engine.needs_adapter}
    data = [listed] if tenant.base else []
    for entry in await asyncio.to_thread(engine.registry.list):
        if not tenant.may_use(entry["name"]):
            continue
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
async def load_adapter(body: AdapterLoadRequest, engine: EngineDep, tenant: TenantDep) -> dict:
    """Load adapter `name` now (404 unknown, 409 unfit for this server); what it is, once loaded."""
    tenant.check_manage()
    info = await fetch_adapter(engine, tenant, body.name)
    return {
        "name": info.name,
        "loaded": True,
        "task_type": info.task_type,
        "nbytes": info.nbytes,
        "label_names": list(info.label_names) if info.label_names else None,
        "quantize": info.quantize,
    }


@router.delete("/v1/adapters/{name}")
async def unload_adapter(name: str, engine: EngineDep, tenant: TenantDep) -> dict:
    """Unload adapter `name` (404 when not loaded, 409 while the running batch uses it)."""
    tenant.check_manage()
    tenant.check_adapter(name, loaded=True)
    try:
        await asyncio.to_thread(engine.registry.unload, name)
    except LorakitError as error:
        if not is_name(name):
            raise ApiError(400, "invalid_adapter_name", str(error)) from None
        loaded = {entry["name"] for entry in await asyncio.to_thread(engine.registry.list) if entry["loaded"]}
        if name not in loaded:
            raise not_loaded(name) from None  # the registry's message lists every loaded adapter
        raise ApiError(409, "adapter_busy", str(error)) from None
    return {"name": name, "loaded": False}


@router.post("/v1/load_lora_adapter", response_class=PlainTextResponse)
async def load_lora_adapter(body: LoraLoadRequest, engine: EngineDep, tenant: TenantDep) -> str:
    """vLLM's load: the folder `lora_path`, confined to the adapters folder, as `lora_name`."""
    tenant.check_manage()
    adapters = engine.registry.adapters_dir
    folder = _inside_adapters_folder(adapters, body.lora_path)
    tenant.check_adapter(body.lora_name)
    loaded = {entry["name"] for entry in await asyncio.to_thread(engine.registry.list) if entry["loaded"]}
    if body.lora_name in loaded:
        if not body.load_inplace:
            raise ApiError(400, "adapter_loaded", f"the LoRA adapter {body.lora_name!r} has already been loaded")
        await unload_adapter(body.lora_name, engine, tenant)
    tenant.check_folder(adapters, folder, body.lora_path)
    try:
        await asyncio.to_thread(engine.registry.load, folder, body.lora_name)
    except LorakitError as error:  # a bad name, or a folder that is no adapter of this base
        code = "invalid_adapter_name" if not is_name(body.lora_name) else "adapter_unfit"
        raise ApiError(400, code, str(error)) from None
    return f"Success: LoRA adapter '{body.lora_name}' added successfully."


@router.post("/v1/unload_lora_adapter", response_class=PlainTextResponse)
async def unload_lora_adapter(body: LoraUnloadRequest, engine: EngineDep, tenant: TenantDep) -> str:
    """vLLM's unload of `lora_name` (404 when not loaded, 409 while a running batch uses it)."""
    await unload_adapter(body.lora_name, engine, tenant)
    return f"Success: LoRA adapter '{body.lora_name}' removed successfully."


def _inside_adapters_folder(adapters: Path | None, path: str) -> Path:
    """`path` resolved (links followed; relative to the adapters folder) if it lies inside it.

    Raises:
        ApiError: 403 when the server has no adapters folder or the path leads out of it; 400 for a
            path no file system takes (a NUL byte, `~name` of no user, a link loop, a name too long).
    """
    if adapters is None:
        raise ApiError(403, "path_forbidden", "this server has no adapters folder; it loads no adapter by path")
    try:
        folder = (adapters / Path(path).expanduser()).resolve()
        folder.exists()  # the file system's refusals (a name too long) here, not in a later is_dir()
    except (ValueError, RuntimeError, OSError) as error:
        reason = getattr(error, "strerror", None) or error  # an OSError's text repeats the whole path
        raise ApiError(400, "invalid_path", f"lora_path {path!r} is not a usable path ({reason})") from None
    if not folder.is_relative_to(adapters):
        raise ApiError(403, "path_forbidden", f"lora_path must lie inside the adapters folder {adapters}")
    return folder
