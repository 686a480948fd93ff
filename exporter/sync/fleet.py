"""Every Triton server the sync drives, as one: load everywhere, READY only when READY on all.

The servers come from ``sync.triton_dns`` (resolved again for every pass: a Kubernetes headless
Service lists the pods that exist now), ``sync.triton_urls`` or the single ``sync.triton_url``.
They share one model repository, so a version is installed once and loaded on each server. A
server that does not answer is *down*: it is left out of the pass (the routing may switch
without it), reported in the status file and the metrics, and brought in line by the first pass
that finds it back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from exporter.errors import TritonControlError
from treeserve.endpoints import resolve_admin
from treeserve.local_triton import sync_triton_url

log = logging.getLogger(__name__)


def triton_endpoints(settings: Any) -> list[str]:
    """The Triton admin endpoints of the settings (``triton_dns`` resolved now)."""
    sync = settings.sync
    if sync.triton_dns:
        return resolve_admin(sync.triton_dns)
    if sync.triton_urls is not None:
        return list(sync.triton_urls)
    return [sync_triton_url(settings)]  # the setting, else the local Triton's recorded gRPC port


@dataclass
class ServerState:
    """What the last look at one server found."""

    up: bool = True
    error: str = ""
    ready: dict[str, list[str]] = field(default_factory=dict)
    """model -> READY versions."""


class TritonFleet:
    """The admin clients of every server, with the per-server verdicts of the current pass."""

    def __init__(self, urls: list[str], *, client_factory: Callable[[str], Any], source: str = "") -> None:
        self.source = source
        """What the servers were resolved from (named when there are none)."""
        self._client_factory = client_factory
        self.clients: dict[str, Any] = {url: client_factory(url) for url in urls}
        self.state: dict[str, ServerState] = {url: ServerState() for url in urls}

    @property
    def up(self) -> list[str]:
        """Servers that answered so far in this pass."""
        return [u for u, s in self.state.items() if s.up]

    def close(self) -> None:
        """Release every client."""
        for c in self.clients.values():
            c.close()

    def _down(self, url: str, error: Exception | str) -> None:
        if self.state[url].up:
            log.warning("decision=server-down server=%s error=%s", url, error)
        self.state[url] = ServerState(up=False, error=str(error))

    def check(self) -> None:
        """Mark the servers that do not answer their liveness probe as down."""
        for url, c in self.clients.items():
            if not c.live():
                self._down(url, f"Triton at {url} does not answer")

    def live(self) -> bool:
        """At least one server is up."""
        return bool(self.up)

    def require_one(self) -> None:
        """TritonControlError naming every server when none is up."""
        if not self.up:
            why = "; ".join(f"{u}: {s.error}" for u, s in self.state.items()) or (
                f"{self.source or 'the setting'} resolves to no server"
            )
            raise TritonControlError(f"every Triton server is unreachable ({why})")

    def ready_by_server(self, model: str) -> dict[str, set[str]]:
        """model's READY versions on each up server (a server that fails the call goes down)."""
        out: dict[str, set[str]] = {}
        for url in self.up:
            try:
                out[url] = self.clients[url].ready_versions(model)
            except TritonControlError as e:
                self._down(url, e)
                continue
            self.state[url].ready[model] = sorted(out[url], key=int)
        return out

    def ready_versions(self, model: str) -> set[str]:
        """Versions READY on every up server (what the routing may name)."""
        per = self.ready_by_server(model)
        self.require_one()
        sets = list(per.values())
        return set.intersection(*sets) if sets else set()

    def load(
        self,
        model: str,
        *,
        unless_ready: set[str] | None = None,
        config: str | None = None,
        servers: list[str] | None = None,
    ) -> None:
        """(Re)load ``model`` on every up server (only those lacking ``unless_ready`` when given);
        ``config``: a JSON config to load instead of the file's (the explainer companion follows);
        ``servers``: only the up servers among these, and no server need stay up afterwards (a
        partial load the caller may let fail, such as the routed-first load after a restart).

        A server that stops answering goes down; a refused load is raised after every server was
        asked (what did come up is read back by the caller).
        """
        refused: list[str] = []
        per = self.ready_by_server(model) if unless_ready is not None else {}
        targets = [
            u
            for u in self.up
            if (servers is None or u in servers)
            and (unless_ready is None or per.get(u, set()) != unless_ready)
        ]

        def load_one(url: str, client: Any) -> None:
            try:
                if config is None:
                    client.load(model)
                else:
                    client.load_override(model, config)
                    client.load_explainer(model)
            except TritonControlError as e:
                if client.live():
                    refused.append(str(e))
                else:
                    self._down(url, e)

        def load_in_thread(url: str) -> None:
            # tritonclient's HTTP client is bound to the (gevent) hub of the thread that made it:
            # a worker thread uses a client of its own.
            client = self._client_factory(url)
            try:
                load_one(url, client)
            finally:
                client.close()

        if len(targets) == 1:
            load_one(targets[0], self.clients[targets[0]])
        elif targets:
            # In parallel: a promotion waits for the slowest server, not for the sum of them.
            with ThreadPoolExecutor(max_workers=min(8, len(targets))) as pool:
                list(pool.map(load_in_thread, targets))
        if servers is None:
            self.require_one()
        if refused:
            raise TritonControlError("; ".join(refused))

    def each(self) -> Iterator[tuple[str, Any]]:
        """(url, client) of every up server."""
        for url in self.up:
            yield url, self.clients[url]

    def report(self) -> dict[str, dict[str, Any]]:
        """Per-server verdicts for the status file."""
        return {
            url: {"up": s.up, "error": s.error, "ready": {m: list(v) for m, v in s.ready.items()}}
            for url, s in self.state.items()
        }
