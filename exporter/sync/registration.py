"""Create (or update) the MLflow webhook that wakes the sync on alias changes and new versions."""

from __future__ import annotations

import logging
from typing import Any

from exporter.sync.webhook import WEBHOOK_EVENTS
from treeserve.errors import ConfigError
from treeserve.registry import mlflow_errors

log = logging.getLogger(__name__)

DEFAULT_WEBHOOK_NAME = "treeserve-sync"


def register_webhook(client: Any, url: str, *, secret: str, name: str = DEFAULT_WEBHOOK_NAME) -> str:
    """Point the webhook ``name`` at ``url`` (created if missing, updated otherwise); its id."""
    if not secret:
        raise ConfigError("a webhook secret is required (TREESERVE_SYNC__WEBHOOK_SECRET or --secret)")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"webhook URL must start with http:// or https://, got {url!r}")
    with mlflow_errors(f"webhook {name!r}"):
        existing = [w for w in _all_webhooks(client) if w.name == name]
        if existing:
            hook = client.update_webhook(
                existing[0].webhook_id, url=url, events=list(WEBHOOK_EVENTS), secret=secret, status="ACTIVE"
            )
            for extra in existing[1:]:
                client.delete_webhook(extra.webhook_id)
            log.info("decision=webhook-updated name=%s url=%s", name, url)
        else:
            hook = client.create_webhook(name=name, url=url, events=list(WEBHOOK_EVENTS), secret=secret)
            log.info("decision=webhook-created name=%s url=%s", name, url)
    return str(hook.webhook_id)


def _all_webhooks(client: Any) -> list[Any]:
    out: list[Any] = []
    token = None
    while True:
        page = client.list_webhooks(max_results=100, page_token=token)
        out.extend(page)
        token = getattr(page, "token", None)
        if not token:
            return out
