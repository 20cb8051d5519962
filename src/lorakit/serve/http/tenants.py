"""Tenants: who a request acts for (its API key picks one, see `keys`) and what it may do.

    Tenant("acme", adapters=("acme-*", "shared-summary"), base=False, manage=True, metrics=False)
      adapters  names it may use, load, unload and see: glob patterns (fnmatch, case-sensitive)
      base      may use the base model directly (/v1/classify with adapter null; model = the base's name)
      manage    may load and unload adapters (its own only)
      metrics   may read /metrics (every tenant's counts: for operators)

Every permission check of the API is a method here, so one file says who may do what. A tenant
never learns another tenant's adapter names: an adapter outside its patterns answers exactly as
one that does not exist (404 with the same body, built by `unknown_adapter`, `not_loaded`,
`missing_folder`) and lists leave it out. Refusals that reveal no name (manage, metrics, the base)
are 403. `ADMIN` (the --api-key) and `OPEN` (a server without keys) may do everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from lorakit.serve.engine.adapters import is_name
from lorakit.serve.http.errors import ApiError

NO_TENANT = "-"  # the metrics label of requests that no key identified (a server without keys; 401s)


@dataclass(frozen=True)
class Tenant:
    """A named set of permissions: adapter-name patterns, and whether it may use the base model,
    manage adapters, and read /metrics."""

    name: str
    adapters: tuple[str, ...] = ()
    base: bool = False
    manage: bool = False
    metrics: bool = False

    def may_use(self, adapter: str) -> bool:
        """Whether adapter name `adapter` matches one of this tenant's patterns."""
        return any(fnmatchcase(adapter, pattern) for pattern in self.adapters)

    def check_adapter(self, name: str, *, loaded: bool = False) -> None:
        """Refuse an adapter outside the patterns as if it did not exist: 404 `unknown_adapter`, or
        `not_loaded` when the caller needs it `loaded` (unload). An invalid name passes, to get the
        registry's 400, as a missing one with that name would."""
        if is_name(name) and not self.may_use(name):
            raise not_loaded(name) if loaded else unknown_adapter(name)

    def check_folder(self, adapters: Path, folder: Path, lora_path: str) -> None:
        """Refuse (404 `missing_folder`) a `folder` (resolved, inside `adapters`) that does not exist
        or whose first part inside `adapters` (an adapter's own subfolder) is outside the patterns:
        no tenant loads another's adapter under a name of its own."""
        parts = folder.relative_to(adapters).parts
        if not folder.is_dir() or not self.may_use(parts[0] if parts else ""):
            raise missing_folder(lora_path)

    def check_base(self, base_model: str) -> None:
        """Refuse (403 base_model_forbidden) the base model without the `base` permission."""
        if not self.base:
            message = (
                f"this API key may not use the base model {base_model!r} directly; "
                "name one of its adapters (GET /v1/models lists them)"
            )
            raise ApiError(403, "base_model_forbidden", message)

    def check_manage(self) -> None:
        """Refuse (403 manage_forbidden) loading or unloading without the `manage` permission."""
        if not self.manage:
            raise ApiError(403, "manage_forbidden", "this API key may not load or unload adapters (manage: false)")

    def check_metrics(self) -> None:
        """Refuse (403 metrics_forbidden) /metrics without the `metrics` permission."""
        if not self.metrics:
            raise ApiError(403, "metrics_forbidden", "this API key may not read /metrics (metrics: false)")


ADMIN = Tenant("admin", ("*",), base=True, manage=True, metrics=True)  # the --api-key
OPEN = Tenant(NO_TENANT, ("*",), base=True, manage=True, metrics=True)  # every request of a server without keys
RESERVED_NAMES = (ADMIN.name, OPEN.name)  # metrics labels that no tenant of a keys file may take


def unknown_adapter(name: str) -> ApiError:
    """404 adapter_not_found: the answer for an adapter that does not exist, or is not the tenant's."""
    message = f"no adapter named {name!r}; GET /v1/models lists the adapters you may use"
    return ApiError(404, "adapter_not_found", message)


def not_loaded(name: str) -> ApiError:
    """404 adapter_not_loaded: unloading an adapter that is not loaded, or is not the tenant's."""
    return ApiError(404, "adapter_not_loaded", f"adapter {name!r} is not loaded; GET /v1/models shows which are")


def missing_folder(lora_path: str) -> ApiError:
    """404 adapter_not_found: vLLM's load of a folder that does not exist, or is not the tenant's."""
    return ApiError(404, "adapter_not_found", f"no adapter folder at lora_path {lora_path}")
