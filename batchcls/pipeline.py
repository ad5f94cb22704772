"""The only place that knows the flow: plan -> prep (Ray tasks) || infer (Ray actor pool) -> reduce -> report."""

from __future__ import annotations

import os
import sys
import time
from collections import deque

import ray
from tqdm import tqdm

from .analysis.runreport import write_run_report_safely
from .backends.providers import worker_env
from .cache import check_writable, shard_cache_path
from .calibrate import deployed_model, describe_model
from .config import Job
from .constants import CACHED_READ_CPUS, MAX_SHARDS_IN_FLIGHT_PER_WORKER, PREP_NICENESS, WORKER_NICENESS
from .cluster import actor_options, check_capacity, host_units, init_ray, prep_placement, unwrap_error, worker_count
from .errors import BatchclsError, DeviceError, JobError
from .plan import Plan, make_plan
from .rundir import RunDir
from .stages.infer import InferWorker
from .stages.prep import prep_shard, transform_spec
from .stages.reduce import reduce_shard
from .stages.report import compute_metrics, format_report
from .workload import backend_options, generate_dataset, read_model_bytes, resolve_fp32_model

# Ray retries a prep task whose process died (OOM, segfault in a decoder) this many times.
PREP_MAX_RETRIES = 3
# An inference worker lost mid-run is replaced this many times in all before the run gives up.
MAX_WORKER_REPLACEMENTS = 8
WAIT_TIMEOUT_S = 1.0


def set_niceness(value: int) -> None:
    """This thread's niceness to `value` where allowed (raising it always is; lowering it needs
    privileges, and without them the current one stays)."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, value)
    except (AttributeError, OSError):
        pass


def _prep_task(root, samples, spec, cache_path):
    start = time.time()
    set_niceness(PREP_NICENESS)
    if not os.path.isdir(root):
        import socket

        raise BatchclsError(f"dataset.root: {root!r} is not a folder on host {socket.gethostname()}; make it "
                            "readable at the same path on every host, or set runtime.prep_on: driver")
    prepared = prep_shard(root, samples, spec, cache_path)
    meta = {"n": len(samples), "ok": len(prepared["images"]), "cached": prepared["cached"],
            "prep_s": prepared["prep_s"], "start": start, "end": time.time(),
            "nice": os.getpriority(os.PRIO_PROCESS, 0)}
    return meta, prepared


class _RemoteWorker(InferWorker):
    def __init__(self, *args):
        # Before the session makes its threads (they inherit it); the process may have run prep tasks.
        set_niceness(WORKER_NICENESS)
        if args[1] == "vacc":  # the dies of this host: its units of the resource the worker asked for
            options = dict(args[2])
            units = host_units(options.pop("resources", {}))
            args = (*args[:2], {**options, "die_count": options.get("die_count") or units}, *args[3:])
        # A model that does not load is the user's error, returned by the first call: raised here,
        # Ray would also print the actor's traceback above the one-line message.
        self.init_error: BatchclsError | None = None
        try:
            super().__init__(*args)
        except BatchclsError as e:
            self.init_error = e

    def check_input(self, shape: tuple) -> None:
        if self.init_error is not None:
            raise self.init_error
        super().check_input(shape)

    def describe(self) -> dict:
        node = ray.get_runtime_context().get_node_id()
        if self.init_error is not None:  # no error of its own: the first call's one line is the message
            return {"error": str(self.init_error), "node_id": node}
        return {**super().describe(), "node_id": node}

    def __call__(self, prepared: dict) -> dict:
        start = time.time()
        out = super().__call__(prepared)
        out["start"], out["end"] = start, time.time()
        return out


def resolve_model(job: Job) -> str:
    """The model to run: for the vacc backend the compiled model's prefix; else the fp32 ONNX (below), or
    at `model.precision` fp16/int8 its cached build."""
    if job.inference.backend == "vacc":
        return job.model.vacc
    return deployed_model(job, resolve_fp32_model(job))


def empty_stats() -> dict:
    """What a run measures, before it starts (and for a run with nothing left to do)."""
    return {"prep_start": None, "prep_end": None, "infer_start": None, "infer_end": None, "prep_images": 0,
            "cached_shards": 0, "prepared_shards": 0, "prep_niceness": None, "run_s": 0.0, "call_s": 0.0,
            "idle_s": [], "workers": [], "prep_shards": [], "infer_shards": [], "cache_read_s": 0.0, "reduce_s": 0.0}


class Streamer:
    """Runs prep tasks and the inference pool side by side: a shard goes to inference as soon as it is
    prepared, and at most `max_in_flight` shards exist at once, so memory does not grow with the dataset."""

    def __init__(self, plan: Plan, todo, out_dir: str, progress: bool, log):
        job = plan.job
        self.plan, self.job, self.out_dir, self.log = plan, job, out_dir, log
        self.pending = deque(todo)
        self.prep_fn, self.read_fn = (ray.remote(_prep_task).options(
            num_returns=2, num_cpus=cpus, max_retries=PREP_MAX_RETRIES, **prep_placement(job))
            for cpus in (1, CACHED_READ_CPUS))
        self.worker_cls = ray.remote(_RemoteWorker)
        # The model travels through the object store: hosts need no copy of it, nor a shared filesystem.
        # A vacc model is loaded by the SDK from its files on each host: only the prefix travels.
        model = plan.model_path if job.inference.backend == "vacc" else ray.put(read_model_bytes(plan.model_path))
        self.worker_args = (model, job.inference.backend, backend_options(plan),
                            plan.mean, plan.std, job.inference.batch_size, job.output.topk, job.output.save_logits,
                            plan.scale_rule, plan.class_subset)
        self.spec = transform_spec(plan.transform_params)
        self.cache_dir = os.path.join(job.runtime.cache_dir, "shards")
        self.replacements = 0
        self.workers: list = []
        self._starting: list = []  # (worker, readiness refs) created by start_workers, awaited by run
        self._started: list = []  # every actor this run created, killed at the end whatever happened
        total = sum(len(s) for s in todo)
        bar = dict(total=total, unit="img", disable=not progress, file=sys.stderr, dynamic_ncols=True)
        self.prep_bar = tqdm(desc="prep ", position=0, **bar)
        self.infer_bar = tqdm(desc="infer", position=1, **bar)
        self.stats = empty_stats()

    def close(self) -> None:
        """Free the workers' resources now, not when the garbage collector gets to them: a next run in the
        same cluster needs them."""
        for w in self._started:
            try:
                ray.kill(w)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self._started = []
        self.prep_bar.close()
        self.infer_bar.close()

    def _create_worker(self):
        """Start one actor; returns it and the refs that say it loaded the model and accepts the crops."""
        opts = actor_options(self.job.inference.resources)
        env = worker_env(self.job.inference.providers, self.job.inference.tf32)
        if env:  # set before the process loads any CUDA library
            opts["runtime_env"] = {"env_vars": env}
        w = self.worker_cls.options(**opts).remote(*self.worker_args)
        self._started.append(w)
        return w, (w.check_input.remote(self.plan.crop_shape), w.describe.remote())

    def _await_worker(self, w, refs):
        try:
            ray.get(refs[0])
            info = ray.get(refs[1])
        except Exception as e:  # noqa: BLE001 - surfaced as the backend's own message
            raise unwrap_error(e) from None
        self.stats["workers"].append(info)
        return w

    def _new_worker(self):
        return self._await_worker(*self._create_worker())

    def start_workers(self, n: int) -> None:
        """Create the workers without waiting for them: `run` prepares the first shards while the
        workers load the model, and waits for them only before the first inference call."""
        resources = self.job.inference.resources
        check_capacity(resources, n, prep_cpus=1)
        self._starting = [self._create_worker() for _ in range(n)]
        self.workers = [w for w, _ in self._starting]
        self.load = [0] * n
        cpus = ray.cluster_resources().get("CPU", 1) - resources.get("CPU", 0) * n
        self.prep_parallel = max(1, int(cpus))
        self.max_in_flight = n * MAX_SHARDS_IN_FLIGHT_PER_WORKER + self.prep_parallel
        self.prep_cpus = 0.0  # of the prep tasks in flight: a cached shard's read asks CACHED_READ_CPUS

    def run(self) -> dict:
        prep: dict = {}  # meta ref -> (shard, payload ref)
        ready: deque = deque()  # (shard, payload ref) waiting for a worker
        infer: dict = {}  # result ref -> (shard, payload ref, worker slot)
        self._fill_prep(prep, ready, infer)
        for w, refs in self._starting:
            self._await_worker(w, refs)
        self._starting = []
        while self.pending or prep or ready or infer:
            self._fill_prep(prep, ready, infer)
            self._assign(ready, infer)
            refs = list(prep) + list(infer)
            done, _ = ray.wait(refs, num_returns=1, timeout=WAIT_TIMEOUT_S)
            for ref in done:
                if ref in prep:
                    self._on_prepared(ref, prep, ready)
                else:
                    self._on_result(ref, infer, ready)
        return self.stats

    def _fill_prep(self, prep: dict, ready: deque, infer: dict) -> None:
        while self.pending and len(prep) + len(ready) + len(infer) < self.max_in_flight:
            path = shard_cache_path(self.cache_dir, self.plan.prep_key, self.pending[0].key)
            cpus = CACHED_READ_CPUS if os.path.exists(path) else 1.0  # as the driver's host sees the cache
            if self.prep_cpus + cpus > self.prep_parallel:
                return
            self._submit_prep(self.pending.popleft(), prep, path, cpus)

    def _submit_prep(self, shard, prep: dict, cache_path: str, cpus: float) -> None:
        samples = [(s.index, s.path) for s in shard.samples]
        fn = self.prep_fn if cpus == 1.0 else self.read_fn
        meta, payload = fn.remote(self.job.dataset.root, samples, self.spec, cache_path)
        prep[meta] = (shard, payload, cpus)
        self.prep_cpus += cpus
        if self.stats["prep_start"] is None:
            self.stats["prep_start"] = time.time()

    def _on_prepared(self, ref, prep: dict, ready: deque) -> None:
        shard, payload, cpus = prep.pop(ref)
        self.prep_cpus -= cpus
        try:
            meta = ray.get(ref)
        except Exception as e:  # noqa: BLE001 - a prep task that failed after its retries
            raise BatchclsError(f"prep of shard {shard.id} ({shard.samples[0].path} ...) failed after "
                                f"{PREP_MAX_RETRIES} retries: {' '.join(str(unwrap_error(e)).split())[:300]}") from None
        self.stats["prep_end"] = meta["end"]
        self.stats["prep_niceness"] = meta["nice"]
        self.stats["prep_images"] += meta["n"]
        self.stats["prep_shards"].append([meta["start"], meta["end"], meta["n"]])
        self.stats["cached_shards" if meta["cached"] else "prepared_shards"] += 1
        self.stats["cache_read_s"] += meta["prep_s"] if meta["cached"] else 0.0
        self.prep_bar.update(meta["n"])
        ready.append((shard, payload))

    def _assign(self, ready: deque, infer: dict) -> None:
        while ready:
            slot = min(range(len(self.workers)), key=lambda i: self.load[i])
            if self.workers[slot] is None:
                return
            if self.load[slot] >= MAX_SHARDS_IN_FLIGHT_PER_WORKER:
                return
            shard, payload = ready.popleft()
            worker = self.workers[slot]
            infer[worker.__call__.remote(payload)] = (shard, payload, slot, worker)
            self.load[slot] += 1

    def _on_result(self, ref, infer: dict, ready: deque) -> None:
        shard, payload, slot, worker = infer.pop(ref)
        current = self.workers[slot] is worker
        if current:
            self.load[slot] -= 1
        try:
            result = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError) as e:
            if current:  # the other calls queued on the same dead worker are only requeued
                self._replace_worker(slot, e)
            ready.appendleft((shard, payload))
            return
        except ray.exceptions.RayTaskError as e:
            cause = unwrap_error(e)
            if isinstance(cause, DeviceError):  # a card that failed: its worker goes, like a dead one
                self.log(f"shard {shard.id}: {cause}; replacing the worker and redoing the shard")
                if current:
                    ray.kill(worker)
                    self._replace_worker(slot, cause)
                ready.appendleft((shard, payload))
                return
            if isinstance(cause, BatchclsError):
                raise cause from None
            raise
        t_reduce = time.perf_counter()
        try:
            reduce_shard(shard, result, self.out_dir)
        except OSError as e:
            raise BatchclsError(f"output.dir: cannot write the part of shard {shard.id} to {self.out_dir!r} "
                                f"({e.strerror or e}); the parts already written are kept: free space or fix "
                                "the folder, then run the same command again to continue") from None
        s = self.stats
        s["reduce_s"] += time.perf_counter() - t_reduce
        if result.get("outputs_note") and "outputs" not in s:
            s["outputs"] = result["outputs_note"]
            self.log(result["outputs_note"])
        s["infer_start"] = min(s["infer_start"] or result["start"], result["start"])
        s["infer_end"] = max(s["infer_end"] or 0, result["end"])
        s["run_s"] += result["run_s"]
        s["call_s"] += result["call_s"]
        s["idle_s"].append(result["idle_s"])
        s["infer_shards"].append([result["start"], result["end"], len(shard)])
        self.infer_bar.update(len(shard))

    def _replace_worker(self, slot: int, err: Exception) -> None:
        """Start a new worker in the slot of a dead one; when the cluster no longer has room for it (its node
        is gone), go on with the others, or fail when none is left."""
        self.replacements += 1
        if self.replacements > MAX_WORKER_REPLACEMENTS:
            raise BatchclsError(f"inference workers died {self.replacements} times; last: {str(err)[:200]}")
        live = sum(1 for w in self.workers if w is not None) - 1
        self.workers[slot] = None
        self.load[slot] = MAX_SHARDS_IN_FLIGHT_PER_WORKER  # nothing is assigned to an empty slot
        try:
            check_capacity(self.job.inference.resources, live + 1)
            self.workers[slot] = self._new_worker()
            self.load[slot] = 0
            self.log(f"inference worker {slot} died ({type(err).__name__}); replaced it, redoing its shards")
        except BatchclsError:
            if live == 0:
                raise
            self.log(f"inference worker {slot} died ({type(err).__name__}) and the cluster has no room for "
                     f"another; going on with {live} worker(s)")


def _timing(stats: dict, images: int, t_command: float, t_end: float) -> dict:
    def rate(n, a, b):
        return n / (b - a) if a is not None and b is not None and b > a else 0.0

    idle = stats["idle_s"]
    return {
        "end_to_end_s": t_end - t_command,
        "end_to_end_images_per_s": rate(images, t_command, t_end),
        "startup_s": (stats["infer_start"] - t_command) if stats["infer_start"] else None,
        "prep_s": (stats["prep_end"] - stats["prep_start"]) if stats["prep_end"] else 0.0,
        "prep_images_per_s": rate(stats["prep_images"], stats["prep_start"], stats["prep_end"]),
        "infer_s": (stats["infer_end"] - stats["infer_start"]) if stats["infer_end"] else 0.0,
        "infer_images_per_s": rate(images, stats["infer_start"], stats["infer_end"]),
        "model_run_s": stats["run_s"],
        "worker_busy_s": stats["call_s"],
        # Host-side time inside calls (normalise, top-k) and waits between calls, against model time.
        "host_gap_fraction": (stats["call_s"] - stats["run_s"]) / stats["run_s"] if stats["run_s"] else None,
        "worker_idle_between_shards_s": sum(idle),
        "cache_read_s": stats["cache_read_s"],  # in prep tasks, summed over shards read from the cache
        "driver_reduce_s": stats["reduce_s"],  # Parquet parts written by the driver
    }


def run_job(job: Job, t_command: float | None = None, log=print) -> dict:
    """Run a validated job end to end; returns the metrics also written to `output.dir/metrics.json`."""
    t_command = t_command or time.time()
    t_gen = time.time()
    if generate_dataset(job, log):
        t_command += time.time() - t_gen  # generating demo data is not part of the evaluation's time
    model_path = resolve_model(job)
    plan = make_plan(job, model_path)
    check_writable(job.runtime.cache_dir, "runtime.cache_dir")
    for note in plan.notes:
        log(note)
    log(f"preprocess: {plan.resolved_preprocess}")
    with RunDir(job.output.dir) as rundir:
        rundir.prepare(plan.fingerprint, job.output.overwrite, job.to_dict())
        done = rundir.finished(plan.shards)
        todo = [s for s in plan.shards if s.id not in done]
        log(f"{len(plan.samples)} images in {len(plan.shards)} shards"
            + (f"; reusing {len(done)} finished shards from {job.output.dir}" if done else ""))
        stats = empty_stats()
        started = False
        try:
            if todo:
                started = init_ray(job)
                streamer = Streamer(plan, todo, job.output.dir, job.runtime.progress, log)
                try:
                    streamer.start_workers(worker_count(job))
                    stats = streamer.run()
                finally:
                    streamer.close()
            # Results and metrics are on disk before the local Ray cluster is stopped: end to end
            # ends here, and the report is shown without waiting for Ray's processes to exit.
            metrics = _metrics(plan, stats, todo, done, t_command)
            rundir.write_json("metrics.json", metrics)
            log(format_report(metrics, plan.zoo_row, f"{job.model.name} ({job.model.source})"))
        finally:
            if started:
                t_stop = time.time()
                ray.shutdown()
                stop_s = time.time() - t_stop
        if started:
            metrics["timing"]["ray_shutdown_s"] = stop_s
            rundir.write_json("metrics.json", metrics)
        write_run_report_safely(job.output.dir, log)
    return metrics


def _metrics(plan: Plan, stats: dict, todo: list, done, t_command: float) -> dict:
    """metrics.json: accuracy from the Parquet dump, timing, shards, workers, the resolved job."""
    job = plan.job
    metrics = compute_metrics(job.output.dir, plan.class_subset, plan.real_labels)
    metrics["labels"] = plan.label_info
    t_end = time.time()
    metrics["timing"] = _timing(stats, sum(len(s) for s in todo), t_command, t_end)
    metrics["shards"] = {"total": len(plan.shards), "reused_parts": len(done),
                         "from_cache": stats["cached_shards"], "prepared": stats["prepared_shards"]}
    metrics["reference"] = None if plan.zoo_row is None else {
        "id": plan.zoo_row.id, "top1": plan.zoo_row.top1, "top5": plan.zoo_row.top5}
    metrics["workers"] = stats["workers"]
    # Per-shard [start, end, images] in epoch seconds, t0 = the command's start: throughput over time.
    metrics["timeline"] = {"t0": t_command, "prep": stats["prep_shards"], "infer": stats["infer_shards"]}
    metrics["prep_niceness"] = stats["prep_niceness"]
    metrics["preprocess"] = plan.resolved_preprocess
    metrics["dataset"] = {"root": job.dataset.root, "layout": plan.dataset.layout,
                          "labels_from": plan.dataset.class_source, "selected": len(plan.samples),
                          "in_folder": len(plan.dataset.samples)}
    metrics["job"] = job.to_dict()
    metrics["deploy"] = describe_model(plan.model_path, plan.samples)
    return metrics
