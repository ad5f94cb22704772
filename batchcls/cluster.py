"""Ray connection and placement: join or start a cluster, workers per resource, capacity, where tasks run."""

from __future__ import annotations

import ray

from .config import Job
from .errors import BatchclsError


def init_ray(job: Job) -> bool:
    """Join `runtime.ray_address`, or start a local cluster; True when this run started Ray (and stops it)."""
    if ray.is_initialized():
        return False
    kwargs = {"include_dashboard": False, "log_to_driver": True, "logging_level": "ERROR"}
    address = job.runtime.ray_address
    try:
        if address and address not in ("auto", "local") and ":" in address and "://" not in address:
            _probe(address)  # Ray itself retries an unreachable head for minutes before giving up
        if address:
            ray.init(address=job.runtime.ray_address, **kwargs)
        else:
            ray.init(num_cpus=job.runtime.num_cpus, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise BatchclsError(f"runtime.ray_address: cannot join Ray at {job.runtime.ray_address!r}: "
                            f"{' '.join(str(e).split())[:200]}; start the cluster with 'ray start --head' "
                            "or remove the field to run on a local cluster") from None
    return True


def _probe(address: str, timeout_s: float = 5.0) -> None:
    import socket

    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as e:
        raise ConnectionError(f"nothing answers at {address} ({e})") from None


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


def actor_options(job: Job) -> dict:
    res = dict(job.inference.resources)
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


def check_capacity(job: Job, n: int) -> None:
    """The cluster has the resources for `n` workers, or BatchclsError saying what is missing (Ray would
    otherwise wait forever for an infeasible actor)."""
    total = ray.cluster_resources()
    need = {k: v * n for k, v in job.inference.resources.items() if v > 0}
    short = {k: v for k, v in need.items() if total.get(k, 0) < v}
    if short:
        have = ", ".join(f"{k} {total.get(k, 0):g}" for k in short)
        raise BatchclsError(f"inference.resources: {n} worker(s) x {dict(job.inference.resources)} need "
                            f"{', '.join(f'{k} {v:g}' for k, v in short.items())} but the cluster has {have}; "
                            "lower inference.workers, change inference.resources, or add hosts")
