"""The models a client may name, and adapter management.

GET    /v1/models          the base and every adapter (loaded, or waiting in the adapters folder)
POST   /v1/adapters        {"name"}: load from the adapters folder now (names only, never paths)
DELETE /v1/adapters/{name} unload (the folder stays on disk)
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from lorakit.errors import LorakitError
from lorakit.serve.engine.adapters import is_name
from lorakit.serve.http.calls import fetch_adapter
from lorakit.serve.http.deps import EngineDep, StartedDep
from lorakit.serve.http.errors import ApiError
from lorakit.serve.http.schemas import AdapterLoadRequest

router = APIRouter()


@router.get("/v1/models")
async def models(engine: EngineDep, started: StartedDep) -> dict:
    """OpenAI's model list: the base (with its PEFT task_type), then each adapter with its parent."""
    base_id = engine.registry.base_model
    base = {"id": base_id, "object": "model", "created": started, "owned_by": "lorakit"}
    data = [{**base, "task_type": engine.task_type, "loaded": True}]
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
