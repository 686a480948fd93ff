"""Install a registered version into the Triton repository, and write the model's config.

``install_version`` is the unit the sync uses: download -> convert -> ``onnx.checker`` -> parity
-> build the version directory in ``<repo>/.staging`` -> ``os.replace`` into place. It never
touches ``config.pbtxt`` or Triton. ``write_model_config`` renders the config for a set of
installed versions and a routing table (atomically). ``export`` is what ``treeserve export``
does: both, with routing taken from the registry's aliases.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from exporter.convert import convert_to_onnx
from exporter.errors import ModelNotInRepositoryError, RepositoryError, ServedVersionError
from exporter.explain import build_explainer, write_explainer_version
from exporter.flavors import VersionArtifacts, get_flavor
from exporter.settings import ExporterConfig
from exporter.source import SourceModel, load_source_model, resolve_version
from exporter.validate import check_onnx, check_parity, parity_inputs
from treeserve import contract
from treeserve import repository as repo_mod
from treeserve.repository import TritonModelSpec, VersionMetadata, contract_mismatch

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InstalledVersion:
    """A version directory that passed every check and is in place."""

    model: str
    version: int
    path: Path
    flavor: str
    features: list[str]
    task: str
    n_classes: int
    feature_service: str
    entity_keys: list[str]
    aliases: list[str]
    """Registry aliases that pointed at this version when it was read."""
    source_sha256: str
    max_abs_diff: float
    reused: bool = False
    """True when an identical export (same source sha256 and flavour) was already installed."""
    metadata: VersionMetadata = field(default_factory=VersionMetadata)


@dataclass(frozen=True)
class ExportResult:
    """What ``export`` did."""

    installed: InstalledVersion
    model: repo_mod.RepositoryModel
    config_path: Path


def install_version(
    settings: ExporterConfig,
    client: MlflowClient,
    model: str,
    version: str | int,
    *,
    repository: Path | None = None,
    flavor: str | None = None,
    force: bool = False,
) -> InstalledVersion:
    """Export, validate and atomically install one registered version (no config, no Triton).

    Raises NotFoundError (unknown model/version), UnsupportedModelError, ParityError,
    RepositoryError (unwritable repository). On any failure the repository is unchanged.
    """
    repo = Path(repository) if repository is not None else settings.path(settings.exporter.repository)
    flavor = flavor or settings.exporter.flavor
    fl = get_flavor(flavor)
    repo_mod.ensure_writable(repo)
    started = time.monotonic()
    served = _served_config(repo, model)
    if force or _installed_flavor(repo, model, version) not in (None, flavor):
        refuse_served_in_place(served, repo, model, version, flavor)

    src = load_source_model(client, model, version)
    existing = _existing(repo, model, src, flavor)
    if existing is not None and not force:
        log.info("version already installed", extra={"model": model, "version": src.version})
        return existing
    refuse_served_in_place(served, repo, model, src.version, flavor)  # another build of a served version

    onnx_model = convert_to_onnx(src)
    onnx_bytes = onnx_model.SerializeToString()
    where = f"model {model!r} version {src.version}"
    check_onnx(onnx_bytes, name=where)
    inputs = parity_inputs(src, rows=settings.exporter.parity_rows)
    report = check_parity(
        src,
        onnx_bytes,
        inputs,
        proba_atol=settings.exporter.proba_atol,
        regression_rtol=settings.exporter.regression_rtol,
    )
    # parity_inputs puts the parity_rows reference (or generated) rows first, then the NaN probes.
    explainer = build_explainer(src, inputs, reference_rows=min(settings.exporter.parity_rows, len(inputs)))

    spec = TritonModelSpec(
        name=model,
        task=src.task,  # type: ignore[arg-type]
        features=tuple(src.features),
        n_classes=src.n_classes,
        versions=(int(src.version),),
        feature_service=src.feature_service,
        entity_keys=tuple(src.entity_keys),
    )
    metadata = _metadata(src, flavor, onnx_bytes, report.max_abs_diff, len(inputs))
    metadata = replace(
        metadata,
        attribution=explainer.attribution,
        parity={**metadata.parity, "contributions_max_abs_diff": explainer.max_abs_diff},
    )
    companion = repo_mod.explainer_name(model)
    with (
        repo_mod.staging(repo, model, src.version) as stage,
        repo_mod.staging(repo, companion, src.version) as explainer_stage,
    ):
        files = fl.write_version_files(
            VersionArtifacts(spec=spec, onnx_model=onnx_bytes, xgboost_model=src.xgboost_json), stage
        )
        repo_mod.write_reference(stage, inputs, report.outputs)
        metadata = replace(metadata, files=tuple(sorted(files)))
        write_explainer_version(explainer_stage, explainer, inputs, replace(metadata, model=companion))
        repo_mod.write_version_metadata(stage, metadata)  # last: marks the directory complete
        # The explainer first: a complete version directory always has its companion beside it.
        repo_mod.install_staged(explainer_stage, repo, companion, src.version)
        path = repo_mod.install_staged(stage, repo, model, src.version)
    log.info(
        "installed version",
        extra={
            "model": model,
            "version": src.version,
            "flavor": flavor,
            "seconds": time.monotonic() - started,
        },
    )
    return _installed(path, src, flavor, report.max_abs_diff, metadata)


def spec_for_versions(
    settings: ExporterConfig,
    repository: Path,
    model: str,
    *,
    versions: list[int] | tuple[int, ...],
    routing: dict[str, str],
) -> TritonModelSpec:
    """The model description for a set of installed versions (they must share one feature contract)."""
    if not versions:
        raise RepositoryError(f"model {model!r}: a config needs at least one version")
    metas = {int(v): repo_mod.read_version_metadata(repository, model, v) for v in versions}
    newest = metas[max(metas)]
    for v, meta in metas.items():
        problem = contract_mismatch(
            meta, newest, version_label=f"version {v}", other_label=f"version {max(metas)}"
        )
        if problem:
            raise RepositoryError(f"model {model!r}: {problem}")
    bad = {a: v for a, v in routing.items() if int(v) not in metas}
    if bad:
        raise RepositoryError(f"model {model!r}: routing {bad} points at versions that are not installed")
    ex = settings.exporter
    return TritonModelSpec(
        name=model,
        task=newest.task,  # type: ignore[arg-type]
        features=newest.features,
        n_classes=newest.n_classes,
        versions=tuple(sorted(metas)),
        routing=dict(routing),
        feature_service=newest.feature_service,
        entity_keys=newest.entity_keys,
        max_batch_size=ex.max_batch_size,
        dynamic_batching=ex.dynamic_batching,
        queue_delay_us=ex.max_queue_delay_us,
        instance_count=ex.instance_count,
        instance_kind=ex.instance_kind,
        ort_intra_op_threads=ex.ort_intra_op_threads,
        ort_inter_op_threads=ex.ort_inter_op_threads,
    )


def write_model_config(
    settings: ExporterConfig,
    repository: Path,
    model: str,
    *,
    versions: list[int] | tuple[int, ...],
    routing: dict[str, str],
    flavor: str | None = None,
) -> repo_mod.RepositoryModel:
    """Render and atomically write ``<repo>/<model>/config.pbtxt`` for installed ``versions``."""
    flavor = flavor or settings.exporter.flavor
    for v in versions:
        meta = repo_mod.read_version_metadata(repository, model, v)
        if meta.flavor not in (flavor, "") and not _files_fit(meta, flavor):
            raise RepositoryError(
                f"model {model!r} version {v} was exported as {meta.flavor}; re-export it as {flavor}"
            )
    spec = spec_for_versions(settings, repository, model, versions=versions, routing=routing)
    path = repo_mod.write_config(repository, spec, get_flavor(flavor))
    return repo_mod.RepositoryModel(spec=spec, flavor=flavor, path=path.parent)


def export(
    settings: ExporterConfig,
    client: MlflowClient,
    model: str,
    *,
    alias: str | None = None,
    version: str | int | None = None,
    repository: Path | None = None,
    flavor: str | None = None,
    force: bool = False,
) -> ExportResult:
    """``treeserve export``: install the version and add it (with its registry aliases) to the config."""
    repo = Path(repository) if repository is not None else settings.path(settings.exporter.repository)
    flavor = flavor or settings.exporter.flavor
    number = resolve_version(client, model, alias=alias, version=version)
    refuse_flavor_switch(_served_config(repo, model), repo, model, number, flavor)
    installed = install_version(settings, client, model, number, repository=repo, flavor=flavor, force=force)

    try:
        current = repo_mod.read_model_config(repo, model)
        kept = set(current.versions)
        routing = dict(current.routing)
    except ModelNotInRepositoryError:
        kept, routing = set(), {}
    on_disk = set(repo_mod.installed_versions(repo, model))
    versions = sorted((kept & on_disk) | {installed.version})
    # A version exported under a different contract cannot share the config: keep only compatible ones.
    versions = [v for v in versions if v == installed.version or _compatible(repo, model, v, installed)]
    routing = {a: v for a, v in routing.items() if int(v) in versions}
    for a in {*installed.aliases, *([alias] if alias else [])}:
        routing[a] = str(installed.version)
    written = write_model_config(settings, repo, model, versions=versions, routing=routing, flavor=flavor)
    return ExportResult(installed=installed, model=written, config_path=written.path / repo_mod.CONFIG_FILE)


# ---- what serves is never modified in place ---------------------------------------------------


def _served_config(repo: Path, model: str) -> repo_mod.RepositoryModel | None:
    try:
        return repo_mod.read_model_config(repo, model)
    except ModelNotInRepositoryError:
        return None


def _installed_flavor(repo: Path, model: str, version: str | int) -> str | None:
    try:
        return repo_mod.read_version_metadata(repo, model, version).flavor or None
    except (OSError, ValueError, RepositoryError, ModelNotInRepositoryError):
        return None  # not installed (or unreadable): nothing to protect


def _role(current: repo_mod.RepositoryModel, version: int) -> str:
    aliases = sorted(a for a, v in current.spec.routing.items() if int(v) == version)
    return "routed as " + ", ".join(aliases) if aliases else "kept for rollback"


def refuse_served_in_place(
    current: repo_mod.RepositoryModel | None, repo: Path, model: str, version: str | int, flavor: str
) -> None:
    """ServedVersionError when installing ``version`` would replace a served version's files."""
    v = int(version)
    if current is None or v not in current.spec.versions or v not in repo_mod.installed_versions(repo, model):
        return
    raise ServedVersionError(
        f"model {model!r} version {v} is served ({_role(current, v)}, {_installed_flavor(repo, model, v)}); "
        f"exporting it again as {flavor} would replace its files in place, so nothing was written: "
        "register and promote a new version instead, or stop serving this one first"
    )


def refuse_flavor_switch(
    current: repo_mod.RepositoryModel | None, repo: Path, model: str, version: str | int, flavor: str
) -> None:
    """ServedVersionError when a config in ``flavor`` could not run the other served versions."""
    if current is None or current.flavor == flavor:
        return
    on_disk = set(repo_mod.installed_versions(repo, model))
    others = [
        v
        for v in current.spec.versions
        if v != int(version)
        and v in on_disk
        and not _files_fit(repo_mod.read_version_metadata(repo, model, v), flavor)
    ]
    if others:
        raise ServedVersionError(
            f"model {model!r} is served as {current.flavor} (versions {', '.join(map(str, others))}); "
            f"a {flavor} config could not run them, so nothing was written: export in {current.flavor} "
            "or stop serving those versions first"
        )


# ---- helpers --------------------------------------------------------------------------------


def _metadata(
    src: SourceModel, flavor: str, onnx_bytes: bytes, max_diff: float, rows: int
) -> VersionMetadata:
    return VersionMetadata(
        model=src.name,
        version=str(src.version),
        run_id=src.run_id,
        task=src.task,
        n_classes=src.n_classes,
        objective=src.objective,
        features=tuple(src.features),
        feature_service=src.feature_service,
        entity_keys=tuple(src.entity_keys),
        medians=dict(src.medians),
        base_rate=float(src.base_rate or 0.0),
        encodings=dict(src.encodings),
        best_iteration=src.best_iteration,
        source_sha256=src.source_sha256,
        onnx_sha256=hashlib.sha256(onnx_bytes).hexdigest(),
        flavor=flavor,
        exported_at=datetime.now(UTC).isoformat(timespec="seconds"),
        parity={"rows": rows, "max_abs_diff": max_diff, "reference": src.reference_origin},
    )


def _installed(
    path: Path, src: SourceModel, flavor: str, max_diff: float, meta: VersionMetadata, *, reused: bool = False
) -> InstalledVersion:
    return InstalledVersion(
        model=src.name,
        version=int(src.version),
        path=path,
        flavor=flavor,
        features=list(src.features),
        task=src.task,
        n_classes=src.n_classes,
        feature_service=src.feature_service,
        entity_keys=list(src.entity_keys),
        aliases=list(src.aliases),
        source_sha256=src.source_sha256,
        max_abs_diff=max_diff,
        reused=reused,
        metadata=meta,
    )


def _existing(repo: Path, model: str, src: SourceModel, flavor: str) -> InstalledVersion | None:
    try:
        meta = repo_mod.read_version_metadata(repo, model, src.version)
    except ModelNotInRepositoryError:
        return None
    same = (
        meta.source_sha256 == src.source_sha256
        and meta.flavor == flavor
        and meta.features == tuple(src.features)
        and (repo_mod.version_dir(repo, model, src.version) / contract.VERSION_REFERENCE_FILE).is_file()
    )
    if not same:
        return None
    diff = float(meta.parity.get("max_abs_diff", 0.0))
    return _installed(repo_mod.version_dir(repo, model, src.version), src, flavor, diff, meta, reused=True)


def _files_fit(meta: VersionMetadata, flavor: str) -> bool:
    files = set(meta.files)
    if flavor == "onnxruntime":
        return "model.onnx" in files
    if flavor == "python-ort":
        return {"model.onnx", "model.py"} <= files
    return False


def _compatible(repo: Path, model: str, v: int, installed: InstalledVersion) -> bool:
    problem = contract_mismatch(
        repo_mod.read_version_metadata(repo, model, v),
        installed.metadata,
        version_label=f"version {v}",
        other_label=f"version {installed.version}",
    )
    if problem:
        log.warning("dropping version %s from the config: %s", v, problem)
    return problem is None
