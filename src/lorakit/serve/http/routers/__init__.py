"""The API's endpoints, one `APIRouter` per group; `lorakit.serve.http.app.create_app` mounts them all.

classify (POST /v1/classify) · completions (POST /v1/completions, /v1/chat/completions) · models
(GET /v1/models, POST /v1/adapters, DELETE /v1/adapters/{name}) · status (GET /health, /metrics).

Handlers take what they need through `lorakit.serve.http.deps`, so one router mounts alone on a
bare `FastAPI()` (with `errors.install_handlers` for the JSON error shape).
"""
