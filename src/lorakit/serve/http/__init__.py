"""The HTTP API over one `Engine` (FastAPI): `app.create_app(engine)` assembles it.

routers/ (one `APIRouter` per group of endpoints: classify, completions, models, status) · deps
(what handlers depend on: the engine, the limits, the metrics, from `app.state`; the tenant) ·
limits (what one request may ask) · calls (engine calls from handlers, their failures as
`ApiError`) · errors (the one JSON error shape) · middleware (metrics, API key → tenant, body size)
· keys (the keys file: API keys → tenants) · tenants (what each tenant may do: every permission
check) · schemas (request bodies) · openai (OpenAI-shaped responses and event streams) ·
prometheus (the /metrics text).

Built on `lorakit.serve.engine`; nothing below imports this package.
"""
