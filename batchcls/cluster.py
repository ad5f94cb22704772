"""Ray connection and placement: join or start a cluster, workers per resource, capacity, where tasks run."""

from __future__ import annotations

import ray

from .config import Job
from .errors import BatchclsError


def connect(address: str | None, num_cpus: int | None = None, field: str = "runtime.ray_address",
            resources: dict[str, float] | None = None) -> bool:
    """Join the cluster at `address` ('auto' or HOST:PORT), or start a local one; True when this call
    started Ray (and the caller stops it). `field` is what the user set, for the message; `resources`
    are a local cluster's custom resources (e.g. {"vacc": 4})."""
    if ray.is_initialized():
        return False
    try:
        if address and address not in ("auto", "local") and ":" in address and "://" not in address:
            probe(address)  # Ray itself retries an unreachable head for minutes before giving up
        # "local" starts a cluster of our own even when `ray start` left one running on this host.
        # A cluster of our own runs its workers at the driver's priority: Ray's default (nice 15)
        # hands the inference worker's cores to any other process on the host.
        local = {} if address else {"num_cpus": num_cpus, "_system_config": {"worker_niceness": 0},
                                    **({"resources": dict(resources)} if resources else {})}
        ray.init(address=address or "local", include_dashboard=False, logging_level="ERROR", **local)
    except (ConnectionError, ValueError, RuntimeError) as e:
        text = f"{e} {e.__cause__ or ''}"
        if "AuthToken" in text or "Authentication" in text:
            raise BatchclsError(f"{field}: the Ray cluster at {address!r} asks for its authentication token: "
                                "copy ~/.ray/auth_token from the head host to this one and run with "
                                "RAY_AUTH_MODE=token (or start the cluster with RAY_AUTH_MODE=disabled)") from None
        raise BatchclsError(f"{field}: cannot join Ray at {address!r}: {' '.join(str(e).split())[:200]}; "
                            f"start the cluster with 'ray start --head' or leave {field} out to run on a "
                            "local cluster") from None
    return True


def init_ray(job: Job) -> bool:
    """`connect` as the job says."""
    return connect(job.runtime.ray_address, job.runtime.num_cpus, resources=job.runtime.resources)


def probe(address: str, timeout_s: float = 5.0) -> None:
    """ConnectionError unless something accepts TCP connections at HOST:PORT."""
    import socket

    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as e:
        raise ConnectionError(f"nothing answers at {address} ({e})") from None


def unwrap_error(e: Exception) -> Exception:
    """The user-facing error inside a Ray error (a model that does not load, a fixed batch), if any."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, BatchclsError):
        return cause
    text = str(e)
    for marker in ("BatchclsError: ", "BackendUnavailable: ", "JobError: "):
        if marker in text:
            return BatchclsError(text.split(marker, 1)[1].strip().splitlines()[0])
    return e


def worker_count(job: Job) -> int:
    """`inference.workers`, or for 'auto' one worker per unit of the accelerator resource asked for."""
    if job.inference.workers != "auto":
        return int(job.inference.workers)
    res = {k: v for k, v in job.inference.resources.items() if k != "CPU" and v > 0}
    total = ray.cluster_resources()
    if not res:
        return 1
    counts = [int(total.get(k, 0) // v) for k, v in res.items()]
    if min(counts) < 1:
        raise BatchclsError(f"inference.workers: 'auto' found no {', '.join(res)} in the cluster "
                            f"(it has {', '.join(sorted(total))}); add such hosts or change inference.resources")
    return min(counts)


def host_units(resources: dict[str, float]) -> int | None:
    """From inside a worker: how many units of its accelerator resource (the first non-CPU/GPU one asked
    for, e.g. vacc) its host has; None when it asked for none."""
    names = [k for k, v in resources.items() if k not in ("CPU", "GPU") and v > 0]
    if not names:
        return None
    node = ray.get_runtime_context().get_node_id()
    for info in ray.nodes():
        if info.get("NodeID") == node:
            return int(info.get("Resources", {}).get(names[0], 0)) or None
    return None


def actor_options(resources: dict[str, float]) -> dict:
    """Ray actor options for one worker's resources (CPU and GPU have their own keywords)."""
    res = dict(resources)
    opts = {"num_cpus": res.pop("CPU", 0), "max_restarts": 0}
    if "GPU" in res:
        opts["num_gpus"] = res.pop("GPU")
    if res:
        opts["resources"] = res
    return opts


def prep_placement(job: Job) -> dict:
    """Prep tasks run anywhere there is a CPU, or only on the driver's host (`runtime.prep_on: driver`)."""
    if job.runtime.prep_on == "any":
        return {}
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)}


def check_capacity(resources: dict[str, float], n: int, field: str = "inference.resources",
                   fix: str = "lower inference.workers, change inference.resources, or add hosts",
                   prep_cpus: int = 0) -> None:
    """The cluster has the resources for `n` workers, or BatchclsError saying what is missing (Ray would
    otherwise wait forever for an infeasible actor)."""
    total = ray.cluster_resources()
    short = {k: v * n for k, v in resources.items() if v > 0 and total.get(k, 0) < v * n}
    if short:
        have = ", ".join(f"{k} {total.get(k, 0):g}" for k in short)
        raise BatchclsError(f"{field}: {n} worker(s) x {dict(resources)} need "
                            f"{', '.join(f'{k} {v:g}' for k, v in short.items())} but the cluster has {have}; {fix}")
    if prep_cpus and total.get("CPU", 0) - resources.get("CPU", 0) * n < prep_cpus:
        # Prep tasks take a whole CPU each: workers holding every CPU would leave them queued forever.
        raise BatchclsError(f"{field}: {n} worker(s) x {dict(resources)} hold all {total.get('CPU', 0):g} CPUs "
                            "of the cluster and leave none for prep tasks; give each worker a fraction "
                            "(e.g. {CPU: 0.5}), set runtime.num_cpus higher, or lower inference.workers")
