"""``treeserve sync status``: the status file next to what the registry and Triton say right now."""

from __future__ import annotations

import time
from typing import Any

from exporter.settings import SyncConfig
from exporter.sync import adapters
from exporter.sync.status import read_status
from treeserve.errors import TreeserveError
from treeserve.registry import read_model_state, registry_client


def build_report(settings: SyncConfig, *, live: bool = True) -> dict[str, Any]:
    """A JSON-ready report: last pass, per model desired/served/why, and live observations."""
    status = read_status(settings.path(settings.sync.status_file))
    report: dict[str, Any] = {
        "status_file": str(settings.path(settings.sync.status_file)),
        "last_pass": {
            "result": status.result,
            "trigger": status.trigger,
            "error": status.error,
            "age_s": round(time.time() - status.updated_at, 1) if status.updated_at else None,
            "duration_s": status.duration_s,
        },
        "models": {},
        "servers": _servers(settings, status.servers, live=live),
    }
    repo = settings.path(settings.exporter.repository)
    client = registry_client(settings.mlflow_tracking_uri) if live else None
    for model in settings.sync.models:
        st = status.models.get(model)
        entry: dict[str, Any] = {
            "desired": dict(st.desired_aliases) if st else {},
            "retained": list(st.retained) if st else [],
            "routing": dict(st.routing) if st else {},
            "served_versions": list(st.served_versions) if st else [],
            "prestaged": list(st.prestaged) if st else [],
            "in_sync": bool(st and st.in_sync),
            "message": st.message if st else "no sync pass recorded yet",
            "failures": {
                v: {"reason": f.reason, "message": f.message} for v, f in (st.failures if st else {}).items()
            },
        }
        if live:
            entry["live"] = _live(client, report["servers"], repo, model)
        report["models"][model] = entry
    return report


def _servers(settings: Any, last: dict[str, dict[str, Any]], *, live: bool) -> dict[str, dict[str, Any]]:
    """Each Triton server: what the last pass found, and (live) whether it answers now."""
    out: dict[str, dict[str, Any]] = {url: {"last_pass": dict(v)} for url, v in last.items()}
    if not live:
        return out
    from exporter.sync.reconcile import open_fleet

    fleet = open_fleet(settings, timeout_s=5.0)
    try:
        for url, client in fleet.clients.items():
            entry = out.setdefault(url, {})
            entry["up"] = client.live()
            if entry["up"]:
                try:
                    entry["ready"] = {
                        m: sorted(client.ready_versions(m), key=int) for m in settings.sync.models
                    }
                except TreeserveError as e:
                    entry["error"] = str(e)
        if not fleet.clients:
            out[settings.sync.triton_dns] = {"up": False, "error": "the name resolves to no address"}
    finally:
        fleet.close()
    return out


def _live(client: Any, servers: dict[str, dict[str, Any]], repo: Any, model: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        out["registry_aliases"] = read_model_state(client, model).aliases
    except TreeserveError as e:
        out["registry_error"] = str(e)
    try:
        current = adapters.read_current(repo, model)
        out["repository_routing"] = dict(current.routing) if current else {}
        out["repository_versions"] = sorted(adapters.installed(repo, model), key=int)
    except TreeserveError as e:
        out["repository_error"] = str(e)
    out.update(ready_everywhere(servers, model))
    desired = out.get("registry_aliases")
    routing = out.get("repository_routing")
    if desired is not None and routing is not None:
        served = {a: v for a, v in desired.items() if a in ("champion", "challenger")}
        out["matches_registry"] = all(routing.get(a) == v for a, v in served.items())
    return out


def ready_everywhere(servers: dict[str, dict[str, Any]], model: str) -> dict[str, Any]:
    """``triton_ready_versions``: the versions of ``model`` READY on every Triton that answers (the
    gateways may call any of them), or ``triton_error`` naming the servers that could not say."""
    up = {url: s for url, s in servers.items() if s.get("up")}
    failed = [f"{url}: {s['error']}" for url, s in up.items() if "error" in s]
    if failed:
        return {"triton_error": "; ".join(failed)}
    if not up:
        return {"triton_error": f"no Triton server answers ({', '.join(servers) or 'none resolved'})"}
    ready = [set(s.get("ready", {}).get(model, [])) for s in up.values()]
    return {"triton_ready_versions": sorted(set.intersection(*ready), key=int)}


def render_report(report: dict[str, Any]) -> None:
    """Print the report for a person (rich)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    lp = report["last_pass"]
    age = f"{lp['age_s']}s ago" if lp["age_s"] is not None else "never"
    console.print(
        f"last pass: [bold]{lp['result']}[/] ({lp['trigger'] or '-'}, {age})"
        + (f" — {lp['error']}" if lp["error"] else "")
    )
    for url, srv in report.get("servers", {}).items():
        last = srv.get("last_pass", {})
        up = srv.get("up", last.get("up"))
        state = "[green]up[/]" if up else "[red]down[/]"
        why = srv.get("error") or ("" if up else last.get("error", ""))
        console.print(f"Triton {url}: {state}" + (f" — {why}" if why else ""))
    for model, m in report["models"].items():
        table = Table(title=model, show_header=True)
        table.add_column("alias")
        table.add_column("registry")
        table.add_column("routed")
        table.add_column("state")
        live = m.get("live", {})
        registry = live.get("registry_aliases", m["desired"])
        routing = live.get("repository_routing", m["routing"])
        for alias in ("champion", "challenger"):
            want, have = registry.get(alias), routing.get(alias)
            if want is None and have is None:
                continue
            state = "ok" if want == have else "pending"
            if want in m["failures"]:
                state = f"refused: {m['failures'][want]['reason']}"
            table.add_row(alias, want or "-", have or "-", state)
        console.print(table)
        ready = live.get("triton_ready_versions", m["served_versions"])
        console.print(
            f"  loaded in Triton: {', '.join(ready) or 'none'}; kept for rollback: {', '.join(m['retained']) or 'none'}"
            f"; staged ahead: {', '.join(m.get('prestaged', [])) or 'none'}"
        )
        for key in ("registry_error", "repository_error", "triton_error"):
            if key in live:
                console.print(f"  [red]{key.split('_')[0]}: {live[key]}[/]")
        console.print(
            f"  {'[green]in sync[/]' if m['in_sync'] else '[yellow]not in sync[/]'}: {m['message']}"
        )
