"""`wav2lip batch JOBS --ray [ADDRESS]`: each job a Ray task on a cluster.

The task runs the pipeline in the worker process itself (request.py's parser and request, as
serve does), keeping the loaded model in that process for its next job: Ray reuses a worker for tasks
of the same function, so a worker is a warm engine. Every node needs the same wav2lip-blender
installed (and the job's inputs at the same paths: a shared file system).

Retries: Ray re-runs a task whose worker process or node died (max_retries), never one that
raised (retry_exceptions=False), and a job's own error (Wav2LipError: bad input) is not even an
exception to Ray: the task returns it as a failed result, reported with its one line.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from dataclasses import dataclass

from . import jobfile
from .. import batch_format as J, protocol as P
from ..errors import Wav2LipError, reason
from ..files import write_atomic

# Results are small unless fetched (a video's bytes); waiting longer than this for one that Ray
# says is ready means the object store or the network is stuck.
GET_TIMEOUT_S = 300.0
CONNECT_TIMEOUT_S = 10.0
_POLL_S = 0.5  # how often the driver looks up from ray.wait (Ctrl+C answers within this)
_CANCEL_WAIT_S = 30.0  # for cancelled tasks to unwind (their writers remove their temp files)

_EXECUTORS = None  # in a worker process: the models its earlier jobs loaded
_RESTORERS = None  # and the face restorers (--enhance)


@dataclass
class RaySettings:
    address: str | None = None  # None: $RAY_ADDRESS, else a local cluster
    fetch: bool = False  # outputs come back through Ray and the driver writes them
    retries: int = 3  # re-runs after a worker or node died
    cpus_per_task: int = 1
    get_timeout_s: float = GET_TIMEOUT_S


def wav2lip_job(line: int, options: dict, fetch: bool) -> dict:
    """One job inside a Ray worker: {"status": ok|failed, "seconds", "frames" | "error", and with
    `fetch` the output's bytes under "data"}."""
    global _EXECUTORS, _RESTORERS
    from .request import BadJob, make_request, parse_job

    _set_threads()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="wav2lip-ray-") as tmp:
        options = dict(options)
        if fetch:  # written in the worker's own temp folder, sent back as bytes
            options[P.OPT_OUT] = os.path.join(tmp, "out" + os.path.splitext(str(options.get(P.OPT_OUT)))[1])
        try:
            args = J.job_args({k[2:]: v for k, v in options.items()}, jobfile.list_writer(tmp, line))
            parsed = parse_job(args)
            from .url_inputs import fetch_inputs

            fetch_inputs(parsed)  # --face/--audio given as URLs: fetched on the worker (its cache)
            request = make_request(parsed)
            from ..quality.enhance import Restorers
            from ..sync.pipeline import run
            from ..model.runtime import Executors

            if _EXECUTORS is None:
                _EXECUTORS, _RESTORERS = Executors(keep=2), Restorers(keep=1)
            result = run(request, executors=_EXECUTORS, restorers=_RESTORERS)
        except (Wav2LipError, BadJob, ValueError) as exc:
            return {"status": J.STATUS_FAILED, "seconds": time.perf_counter() - t0, "error": str(exc)}
        done = {"status": J.STATUS_OK, "seconds": time.perf_counter() - t0, "frames": result.frames,
                "node": socket.gethostname(), "pid": os.getpid()}
        if fetch:
            with open(result.out, "rb") as f:
                done["data"] = f.read()
        return done


def _set_threads() -> None:
    # Ray sets OMP_NUM_THREADS to the task's CPUs; torch reads it only at import, and a worker
    # process may have imported torch for an earlier task with another count.
    try:
        import torch
    except ImportError:
        return
    try:
        n = int(os.environ.get("OMP_NUM_THREADS") or 0)
    except ValueError:
        n = 0
    if n > 0 and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def connect(address: str | None):
    """ray.init: ADDRESS, else $RAY_ADDRESS, else a local cluster. Wav2LipError when it fails."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = address or os.environ.get("RAY_ADDRESS") or None
    # Workers' lines would break the progress bar; Ray's own INFO lines say nothing a user needs.
    kwargs: dict = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address is None:
        kwargs["include_dashboard"] = False
    else:
        _reachable(address)
    try:
        return ray.init(address=address, **kwargs)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError ...
        where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
        hint = ""
        if address and not os.environ.get("RAY_AUTH_MODE"):
            # Ray turns token authentication on for a cluster it starts, but a driver given an
            # address sends the token only when told to.
            hint = ("; if the cluster uses token authentication (Ray's default), set RAY_AUTH_MODE=token "
                    "and give its token in RAY_AUTH_TOKEN or ~/.ray/auth_token")
        raise Wav2LipError(f"cannot start or reach {where}: {reason(exc, 200)}{hint}") from None


def _reachable(address: str) -> None:
    """Wav2LipError unless a HOST:PORT address accepts a connection: ray.init waits for a GCS
    that does not answer for many minutes. Other forms (ray://..., auto) are left to Ray."""
    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise Wav2LipError(f"cannot reach the Ray cluster at {address}: {reason(exc)}; "
                           "is it running (`ray start --head`), and is the address its GCS address?") from None


def task_options(resources: dict, settings: RaySettings) -> dict:
    """One GPU per job where the cluster has GPUs, else CPUs only; retries on worker loss only."""
    opts = {"num_cpus": settings.cpus_per_task, "max_retries": settings.retries, "retry_exceptions": False}
    if resources.get("GPU", 0) >= 1:
        opts["num_gpus"] = 1
    elif resources.get("CPU", 0) < settings.cpus_per_task:
        raise Wav2LipError(f"the Ray cluster has {resources.get('CPU', 0):g} CPUs: a job asking for "
                           f"--cpus-per-task {settings.cpus_per_task} would never start")
    return opts


def run_ray(jobs: list, settings: RaySettings, tally) -> bool:
    """Run `jobs` as Ray tasks, each result to `tally`; True when interrupted (Ctrl+C/SIGTERM)."""
    import ray

    connect(settings.address)
    try:
        task = ray.remote(wav2lip_job).options(**task_options(ray.cluster_resources(), settings))
        refs: dict = {}
        for job in jobs:
            why = jobfile.check_out(job) if settings.fetch else None
            if why is not None:
                tally.finish(job, J.STATUS_FAILED, error=why)
            else:
                refs[task.remote(job.line, job.options, settings.fetch)] = job
        pending = list(refs)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1, timeout=_POLL_S)
                for ref in ready:
                    _collect(ray, ref, refs[ref], settings, tally)
            return False
        except KeyboardInterrupt:
            # Not force: the task gets a KeyboardInterrupt, so its writer removes its temp file.
            for ref in pending:
                ray.cancel(ref)
            try:
                ray.wait(pending, num_returns=len(pending), timeout=_CANCEL_WAIT_S)
            except KeyboardInterrupt:
                pass
            for job in jobs:
                tally.finish(job, J.STATUS_CANCELLED)  # only those not finished yet
            return True
    finally:
        ray.shutdown()


def _collect(ray, ref, job, settings: RaySettings, tally) -> None:
    try:
        res = ray.get(ref, timeout=settings.get_timeout_s)
    except ray.exceptions.TaskCancelledError:
        tally.finish(job, J.STATUS_CANCELLED)
        return
    except ray.exceptions.RayTaskError as exc:  # a bug in the task: not retried, one line here
        cause = exc.cause if getattr(exc, "cause", None) is not None else exc
        tally.finish(job, J.STATUS_FAILED, error=f"internal error in the Ray task ({type(cause).__name__}: {reason(cause, 200)})")
        return
    except ray.exceptions.GetTimeoutError:
        tally.finish(job, J.STATUS_FAILED, error=f"the result did not arrive within {settings.get_timeout_s:g} s")
        return
    except ray.exceptions.RayError as exc:  # the worker or node died more often than --retries
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        tally.finish(job, J.STATUS_FAILED, error=f"Ray lost the job after {settings.retries} retries: {first}")
        return
    if res["status"] != J.STATUS_OK:
        tally.finish(job, J.STATUS_FAILED, res["seconds"], res.get("error"))
        return
    if settings.fetch:
        try:
            write_atomic(job.out, res["data"])
        except OSError as exc:
            tally.finish(job, J.STATUS_FAILED, res["seconds"], f"cannot write {job.out}: {reason(exc)}")
            return
    tally.add_frames(int(res.get("frames") or 0))
    tally.finish(job, J.STATUS_OK, res["seconds"], frames=res.get("frames"))

