"""``ablate run`` as a Python function: a study and its options in, trained runs out."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ablate import data as datasets
from ablate import fusion
from ablate import plugins as user_code
from ablate.checkpoints import checkpoint_key, checkpoint_path, remove_checkpoint
from ablate.config import ConfigError, parse_assignment, study_grid, to_dict
from ablate.scheduler import QuietReporter, Reporter, Runner, parse_devices
from ablate.store import STALE_AFTER_S, NewRun, Store
from ablate.studies import MAX_POINTS, GridPoint, Study, expand, load

DONE = ("complete", "diverged")
BACKENDS = ("local", "ray")


@dataclass
class Plan:
    study: Study
    points: list[GridPoint]
    devices: list[str]  # one per worker slot: a GPU shared by K points appears K times
    data_source: str | None
    backend: str = "local"
    per_gpu: int | None = None  # None: one point per GPU here; on Ray, by model size
    data: dict[str, datasets.DataIdentity] = field(default_factory=dict)  # data.dataset -> what it is
    loaded: dict[str, datasets.Dataset] = field(default_factory=dict, repr=False)  # for local workers
    fuse: int | None = None  # most points in one fused step; None: automatic (fuse_cap)
    compile: bool = False  # torch.compile the training step (CUDA only)

    def identity(self, point: GridPoint) -> datasets.DataIdentity:
        return self.data[point_data_key(point)]

    def key(self, point: GridPoint) -> tuple[str, int, str]:
        """What names a point's run in the store: config, seed and data."""
        return point.config_hash, point.seed, self.identity(point).fingerprint


@dataclass
class RunSummary:
    study: str
    total: int
    skipped: int  # already complete or diverged before this invocation
    left_failed: int  # failed earlier and not retried
    counts: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False
    stale: list[dict[str, Any]] = field(default_factory=list)  # runs of dead runners re-queued: id, label, reason
    retried: int = 0  # failed runs re-queued by --retry-failed
    elsewhere: int = 0  # points another live runner is training now
    errors: list[str] = field(default_factory=list)  # not a point's result: workers given up
    out_of_time: bool = False  # stopped at the deadline; the unfinished points stay pending

    @property
    def ok(self) -> bool:
        return not self.failed and not self.errors

    @property
    def failed(self) -> int:
        return self.counts.get("failed", 0)


def plan(
    study: str,
    sets: Sequence[str] = (),
    seeds: int | None = None,
    epochs: int | None = None,
    data: str | None = None,
    device: str | None = None,
    backend: str = "local",
    per_gpu: int | None = None,
    fuse: int | str | None = None,
    compile: bool = False,
    data_cache: dict | None = None,
    max_points: int = MAX_POINTS,
    download: bool = True,
    plugins: Sequence[str] = (),
) -> Plan:
    """Check every input and expand the grid; touches no database, so bad input writes nothing.

    A grid of more than ``max_points`` runs (grid points x seeds) is refused unbuilt.
    ``data_cache`` keeps the data sets read, for plans of several studies on the same data.
    ``download=False`` (a dry run): CIFAR-10 that would be downloaded is not; the plan names
    it ``TO_DOWNLOAD`` and ``settle_data`` finds its fingerprint in a database's official runs.
    Such a plan can be printed, not executed.
    ``plugins`` are files or module paths to import first (``--plugin``), as a study's own are."""
    if backend not in BACKENDS:
        raise ConfigError(f"--backend: unknown backend '{backend}'; accepted: {', '.join(BACKENDS)}")
    if backend == "ray" and importlib.util.find_spec("ray") is None:
        raise ConfigError('--backend ray needs Ray, which is not installed: pip install "ablate[ray]"')
    if per_gpu is not None and per_gpu < 1:
        raise ConfigError(f"--per-gpu must be a positive integer, got {per_gpu}")
    fuse = parse_fuse(fuse)
    user_code.load(list(plugins))  # before the study, whose models they may register
    spec = load(study)
    overrides = [parse_assignment(s) for s in sets]
    if epochs is not None:
        overrides.append(("epochs", epochs))
    if data == "synthetic":
        overrides.append(("data.dataset", "synthetic"))
    if seeds is not None and seeds < 1:
        raise ConfigError(f"--seeds must be a positive integer, got {seeds}")
    if max_points < 1:
        raise ConfigError(f"--max-points must be a positive integer, got {max_points}")
    points = expand(spec, overrides, seeds, max_points)
    source = None if data in (None, "synthetic") else data
    if backend == "ray":  # the devices are the cluster's, and each worker reads its own --data
        kind = (device or "auto").strip()
        if kind not in ("auto", "cpu", "cuda"):
            raise ConfigError(
                f"--device '{kind}' with --backend ray: accepted: auto, cpu, cuda (Ray places the points)"
            )
        devices = [kind]
    else:
        # Several processes per GPU: small models leave most of it idle when trained one at a time.
        devices = [d for d in parse_devices(device) for _ in range(per_gpu or 1)]
    # The data last, as it is the slow check: its fingerprint is part of every point's
    # identity, so which points are done is only known once it is read. Ray workers read
    # their own copy at the same path and check it against this fingerprint.
    loaded, identities = _load_data(points, source, {} if data_cache is None else data_cache, download)
    return Plan(
        spec,
        points,
        devices,
        source,
        backend,
        per_gpu,
        identities,
        loaded if backend == "local" else {},
        fuse=fuse,
        compile=compile,
    )


# The official set is one set of arrays, so one fingerprint; what it is needs the files, so
# a plan that downloads nothing names it by this stand-in, which no recorded run carries.
TO_DOWNLOAD = datasets.DataIdentity("to-download", f"{datasets.OFFICIAL}, downloaded at run time")


def point_data_key(point: GridPoint) -> str:
    return datasets.data_key(point.config.data.dataset, point.config.data.image_size)


def _load_data(points: list[GridPoint], source: str | None, cache: dict, download: bool = True):
    loaded, identities = {}, {}
    for key in sorted({point_data_key(p) for p in points}):
        name = key.partition("@")[0]
        where = "synthetic" if name == "synthetic" else source
        if where is None and name == "cifar10" and not download and not datasets.downloaded()[0]:
            identities[key] = TO_DOWNLOAD
            continue
        if (key, where) not in cache:
            ds = datasets.load_key(key, where)
            cache[key, where] = ds, datasets.identify(where, ds, name)
        loaded[key], identities[key] = cache[key, where]
    return loaded, identities


def _study_spec(study: Study) -> dict[str, Any]:
    return {
        "base": study.base,
        "axes": study.axes,
        "seeds": study.seeds,
        "figures": list(study.figures),
        "reported": study.reported,
        "claims": [c.to_dict() for c in study.claims],
        **({"assumed": list(study.assumed)} if study.assumed else {}),
        **({"plugins": list(study.plugins)} if study.plugins else {}),
        "path": str(study.path) if study.path else None,
    }


def check_same_study(store: Store, study: Study) -> None:
    """Refuse a study file that would take over another study's name: runs of two grids
    would mix under one name, and the first study's definition would be lost."""
    stored = next((s for s in store.studies() if s["name"] == study.name), None)
    if stored is None or study_grid(stored["spec"]) == study_grid(_study_spec(study)):
        return
    was = stored["spec"].get("path") or "another file"
    raise ConfigError(
        f"study '{study.name}' in this database has another base or other axes (from {was}) than "
        f'{study.path or "this study"}; give this file another name (name = "..."), or pass --replace-study '
        "to make it the study's definition (the runs recorded stay, as another variant)"
    )


def data_changes(store: Store, plan_: Plan) -> list[str]:
    """A line for each data set of the plan that this study last ran on, under the same name,
    with other contents: files edited in place give a new fingerprint, so the runs this plan
    adds are a new variant, not more seeds of the old one. Reads only."""
    if plan_.data_source is None:
        return []
    out = []
    runs = store.runs(plan_.study.name)
    for identity in {i.fingerprint: i for i in plan_.data.values() if i.name != "synthetic"}.values():
        same_name = [r for r in runs if r["data_name"] == identity.name and r["data_fp"]]
        if not same_name:
            continue
        last = max(same_name, key=lambda r: (r["created_at"], r["id"]))
        if last["data_fp"] != identity.fingerprint:
            out.append(
                f"data in {plan_.data_source} changed since this study's last run on it: new fingerprint "
                f"{identity.fingerprint} (was {last['data_fp']}), so its runs are a new variant"
            )
    return out


def settle_data(store: Store, plan_: Plan) -> None:
    """A plan's ``TO_DOWNLOAD`` data named by the fingerprint of the official set's runs in
    ``store``, where it holds any: the points they finished are done. Writes nothing."""
    if TO_DOWNLOAD not in plan_.data.values():
        return
    fp = next((r["data_fp"] for r in store.runs() if r["data_name"] == datasets.OFFICIAL and r["data_fp"]), None)
    if fp is not None:
        plan_.data = {
            k: datasets.DataIdentity(fp, TO_DOWNLOAD.name) if v == TO_DOWNLOAD else v for k, v in plan_.data.items()
        }


def to_download(plan_: Plan) -> bool:
    """Whether the plan's data is CIFAR-10 that is downloaded when it runs."""
    return any(v.name == TO_DOWNLOAD.name for v in plan_.data.values())


def existing(store: Store, plan_: Plan) -> dict[tuple[str, int, str], dict[str, Any]]:
    """The recorded runs of the plan's points, keyed (config_hash, seed, data fingerprint)."""
    wanted = {plan_.key(p) for p in plan_.points}
    return {
        (r["config_hash"], r["seed"], r["data_fp"]): r
        for r in store.runs(plan_.study.name)
        if (r["config_hash"], r["seed"], r["data_fp"]) in wanted
    }


def execute(
    store: Store,
    plan_: Plan,
    reporter: Reporter | None = None,
    *,
    retry_failed: bool = False,
    keep_checkpoints: bool = False,
    checkpoints: str | Path | None = None,
    processes: bool | None = None,
    address: str | None = None,
    deadline: float | None = None,
    replace_study: bool = False,
) -> RunSummary:
    """Record the plan's points, then train those not done yet.

    Runs of this study whose runner is gone are re-queued first, and resume from their
    checkpoints; with ``retry_failed``, so are the plan's failed points (from scratch).
    ``checkpoints`` is the folder for them (default: beside the database). ``address`` is
    the Ray cluster's, for a plan made with ``backend="ray"`` (None: a running one, or a
    new one on this machine). At ``deadline`` (``time.monotonic()``) the workers stop after
    their current step and the unfinished points go back to pending, to resume. A study
    recorded under the plan's name with another base or other axes is refused unless
    ``replace_study``.
    """
    reporter = reporter or QuietReporter()
    if to_download(plan_):
        raise ConfigError("this plan was made without its data (download=False): plan it again to run it")
    store.check_intact()
    if not replace_study:
        check_same_study(store, plan_.study)
    for line in data_changes(store, plan_):
        reporter.message(line)
    # The plan has read the data already, so a corrupted batch file has left the database as
    # it was. What is left to check before the first write depends on what is left to train.
    before = existing(store, plan_)
    unsettled = len(before) < len(plan_.points) or any(
        r["status"] in ("pending", "running") or (retry_failed and r["status"] == "failed") for r in before.values()
    )
    folder = Path(checkpoints) if checkpoints is not None else store.checkpoint_dir
    if unsettled:
        check_writable(folder)
    if plan_.backend == "local":

        def make_runner(study_id: int, groups: list[list[int]]) -> Runner:
            return Runner(
                store,
                study_id,
                plan_.devices,
                plan_.data_source,
                reporter,
                plan_.loaded,
                checkpoint_dir=folder,
                keep_checkpoints=keep_checkpoints,
                processes=processes,
                groups=groups,
                fuse=fuse_cap(plan_),
                compile=plan_.compile,
            )

        return _record_and_train(store, plan_, reporter, folder, retry_failed, keep_checkpoints, make_runner, deadline)
    from ablate.ray_runner import RayRunner, cluster

    # The cluster before any write: an address that answers nothing leaves the database as it was.
    with cluster(address, plan_.devices[0], connect=unsettled) as kind:

        def make_ray_runner(study_id: int, groups: list[list[int]]) -> Runner:
            return RayRunner(
                store,
                study_id,
                kind,
                plan_.data_source,
                reporter,
                per_gpu=plan_.per_gpu,
                checkpoint_dir=folder,
                keep_checkpoints=keep_checkpoints,
                groups=groups,
                fuse=fuse_cap(plan_, kind),
                compile=plan_.compile,
            )

        return _record_and_train(
            store, plan_, reporter, folder, retry_failed, keep_checkpoints, make_ray_runner, deadline
        )


def _record_and_train(
    store: Store,
    plan_: Plan,
    reporter: Reporter,
    folder: Path,
    retry_failed: bool,
    keep_checkpoints: bool,
    make_runner: Callable[[int, list[list[int]]], Runner],
    deadline: float | None = None,
) -> RunSummary:
    study = plan_.study
    study_id = store.sync_study(study.name, study.description, _study_spec(study))
    stale = store.requeue_stale(study_id, STALE_AFTER_S)
    for r in stale:
        reporter.message(f"re-queued run {r['id']} ({r['label']}): {r['reason']}")
    store.add_runs(
        study_id,
        (
            NewRun(
                p.config_hash, p.seed, to_dict(p.config), p.label, plan_.identity(p).fingerprint, plan_.identity(p).name
            )
            for p in plan_.points
        ),
    )
    runs = existing(store, plan_)
    retried = 0
    if retry_failed:
        retried = store.retry_failed(study_id, {r["id"] for r in runs.values() if r["status"] == "failed"})
        runs = existing(store, plan_)
    if not keep_checkpoints:
        _sweep_checkpoints(folder, runs.values(), reporter)
    skipped = sum(r["status"] in DONE for r in runs.values())
    failed = sum(r["status"] == "failed" for r in runs.values())
    todo = {r["id"] for r in runs.values() if r["status"] == "pending"}
    summary = RunSummary(
        study.name,
        len(plan_.points),
        skipped,
        failed,
        stale=stale,
        retried=retried,
        elsewhere=sum(r["status"] == "running" for r in runs.values()),
    )
    if not todo:
        return summary
    outcome = make_runner(study_id, fused_groups(plan_, runs, todo)).run(todo, len(todo), skipped, deadline)
    summary.counts, summary.interrupted, summary.errors = outcome.counts, outcome.interrupted, outcome.errors
    summary.out_of_time = outcome.out_of_time
    return summary


def check_writable(folder: Path) -> None:
    """The checkpoint folder, or the nearest existing folder above it, must be writable."""
    here = folder
    while not here.exists() and here != here.parent:
        here = here.parent
    if not here.is_dir() or not os.access(here, os.W_OK | os.X_OK):
        raise ConfigError(
            f"cannot write checkpoints into '{folder}': '{here}' is "
            f"{'not a folder' if not here.is_dir() else 'read-only'}; give --checkpoints a writable folder"
        )


def _sweep_checkpoints(folder: Path, runs, reporter: Reporter) -> None:
    """Checkpoints of finished runs whose runner died before it could remove them."""
    if not folder.is_dir():
        return
    for r in runs:
        if r["status"] in (*DONE, "failed"):
            why = remove_checkpoint(checkpoint_path(folder, r["id"], checkpoint_key(r["id"], r["created_at"])))
            if why:
                reporter.message(f"{r['label']}: {why}")


EXECUTE_OPTIONS = (
    "retry_failed",
    "keep_checkpoints",
    "checkpoints",
    "processes",
    "address",
    "deadline",
    "replace_study",
)


def reach_cluster(plan_: Plan, address: str | None, timeout_s: float | None = None) -> None:
    """For a Ray plan: ConfigError unless its cluster takes this driver within ``timeout_s``
    (None: ``ray_runner.CONNECT_TIMEOUT_S``). Before the database is opened: a cluster that
    never answers leaves no new database behind."""
    if plan_.backend != "ray":
        return
    from ablate.ray_runner import CONNECT_TIMEOUT_S, probe

    probe(address, CONNECT_TIMEOUT_S if timeout_s is None else timeout_s)


def run_study(
    study: str, db: str | None = None, reporter: Reporter | None = None, connect_timeout: float | None = None, **options
) -> RunSummary:
    """``plan`` with the options it takes, then ``execute`` with those it takes."""
    run_options = {k: options.pop(k) for k in EXECUTE_OPTIONS if k in options}
    plan_ = plan(study, **options)
    if run_options.get("checkpoints") is not None:  # before the open, which creates a new database
        check_writable(Path(run_options["checkpoints"]))
    reach_cluster(plan_, run_options.get("address"), connect_timeout)
    store = Store.open(db)
    try:
        return execute(store, plan_, reporter, **run_options)
    finally:
        store.close()


def pending_count(store: Store, plan_: Plan) -> int:
    """The plan's points that are pending: what the next run of it trains."""
    return sum(r["status"] == "pending" for r in existing(store, plan_).values())


def dry_run(store: Store, plan_: Plan) -> list[dict[str, Any]]:
    """Each point with its recorded status (``new`` if never run) and, if it is to be trained,
    its group (``fused_groups``: points of one group train in one fused step); writes nothing."""
    settle_data(store, plan_)
    runs = existing(store, plan_)
    rows = [
        {
            "label": p.label,
            "seed": p.seed,
            "config_hash": p.config_hash,
            "data": plan_.identity(p).name,
            "status": runs.get(plan_.key(p), {}).get("status", "new"),
            "group": None,
        }
        for p in plan_.points
    ]
    todo = [i for i, r in enumerate(rows) if r["status"] not in DONE]
    cap = fuse_cap(plan_)
    for n, members in enumerate(fusion.group([plan_.points[i].config for i in todo], cap), 1):
        for j in members:
            rows[todo[j]]["group"] = n
    return rows


# ---------------------------------------------------------------------- fusion

FUSE_AUTO = {"cuda": 16, "cpu": 1}  # --fuse by default: on the CPU, fusion was measured not to pay


def parse_fuse(value: int | str | None) -> int | None:
    """``--fuse``: a positive integer, or ``auto`` (None)."""
    if value is None or value == "auto":
        return None
    text = str(value).strip()
    if not text.lstrip("-").isdigit() or int(text) < 1:
        raise ConfigError(f"--fuse takes a positive integer (1 turns fusion off) or auto, got {value!r}")
    return int(text)


def fuse_cap(plan_: Plan, kind: str | None = None) -> int:
    """``--fuse``, or by default by device: see FUSE_AUTO; on a GPU, an OOM halves the group."""
    if plan_.fuse is not None:
        return plan_.fuse
    kinds = [kind] if kind else plan_.devices
    return FUSE_AUTO["cuda"] if any("cuda" in d for d in kinds) else FUSE_AUTO["cpu"]


def fused_groups(plan_: Plan, runs: dict[tuple[str, int, str], dict[str, Any]], todo: set[int]) -> list[list[int]]:
    """The run ids of ``todo`` in groups that may train fused, uncapped (the runner claims up
    to ``fuse_cap`` of a group at a time)."""
    if fuse_cap(plan_) == 1:
        return []
    points = [p for p in plan_.points if runs.get(plan_.key(p), {}).get("id") in todo]
    ids = [runs[plan_.key(p)]["id"] for p in points]
    return [[ids[i] for i in g] for g in fusion.group([p.config for p in points]) if len(g) > 1]
