"""Ray across a Slurm allocation: head on the first node, one worker per other node.

Each Slurm task (one per node) calls `join_allocation`. Rank 0 starts the head, waits until
every node's raylet is alive, runs the job as a driver and then writes a done-file; the
other ranks start a worker, wait for that file and stop their worker. Processes are stopped
by the PIDs we started (never `ray stop`, which stops every Ray on the machine), and Slurm
cleans up anything left when the step ends.

These are the steps of `ray symmetric-run`, which is not used as is: it refuses to start on a
node where any Ray is running and ends with `ray stop`, so on a shared node it would fail or
stop another job's Ray. Here every job gets its own ports and temp dir (ray_port, temp_dir).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path


def use_token_auth() -> None:
    """Head, workers and driver must agree on auth: token mode, with the token that the head
    creates in ~/.ray/auth_token (shared home) or RAY_AUTH_TOKEN exported in the profile's setup."""
    os.environ.setdefault("RAY_AUTH_MODE", "token")


def ray_port(job_id: str) -> int:
    """A GCS port per job, so two allocations sharing a node never collide (6379 is left alone)."""
    return 20000 + int(str(job_id).split("_")[0]) % 2500 * 4


def ray_bin() -> str:
    return str(Path(sys.executable).with_name("ray"))


def common_args(cpus: int, gpus: int) -> list[str]:
    return [f"--num-cpus={cpus}", f"--num-gpus={gpus}", "--disable-usage-stats", "--block"]


def temp_dir(port: int) -> str:
    # Private to the job: `ray start` records its address in <temp dir>/ray_current_cluster, and
    # in the shared /tmp/ray every later plain ray.init() on the node would try to join it.
    return f"/tmp/convlens-ray-{port}"


def head_command(ip: str, port: int, cpus: int, gpus: int) -> list[str]:
    """`ray start --head` on ports derived from `port` (port..port+3)."""
    return [ray_bin(), "start", "--head", f"--node-ip-address={ip}", f"--port={port}",
            f"--temp-dir={temp_dir(port)}",
            f"--dashboard-agent-listen-port={port + 1}", f"--dashboard-agent-grpc-port={port + 2}",
            f"--dashboard-port={port + 3}",
            *common_args(cpus, gpus)]


def worker_command(ip: str, head: str, cpus: int, gpus: int) -> list[str]:
    return [ray_bin(), "start", f"--address={head}", f"--node-ip-address={ip}", *common_args(cpus, gpus)]


def wait_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Until host:port accepts connections; fails early if proc (our `ray start`) has exited."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"`{' '.join(proc.args)}` exited with status {proc.returncode}")
        try:
            socket.create_connection((host, port), timeout=2).close()
            return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"Ray head {host}:{port} not reachable after {timeout:.0f} s")


def wait_nodes(n: int, timeout: float) -> None:
    """Block until n raylets are alive in the connected cluster."""
    import ray
    deadline = time.time() + timeout
    while True:
        alive = sum(node["Alive"] for node in ray.nodes())
        if alive >= n:
            print(f"[convlens] Ray cluster up: {alive} nodes, {ray.cluster_resources()}", flush=True)
            return
        if time.time() > deadline:
            raise TimeoutError(f"only {alive} of {n} Ray nodes joined after {timeout:.0f} s")
        time.sleep(1)


def stop_tree(proc: subprocess.Popen) -> None:
    """SIGTERM the process we started and all its descendants, SIGKILL what remains after 10 s."""
    import psutil
    try:
        procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, left = psutil.wait_procs(procs, timeout=10)
    for p in left:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


@contextmanager
def head_node(ip: str, port: int, nodes: int, cpus: int, gpus: int, timeout: float = 300):
    """Start the head, connect this process as the driver, wait for all nodes; tear down after."""
    import ray
    use_token_auth()
    proc = subprocess.Popen(head_command(ip, port, cpus, gpus), stdin=subprocess.DEVNULL)
    try:
        wait_port(ip, port, timeout, proc)
        os.environ["RAY_ADDRESS"] = f"{ip}:{port}"
        ray.init(address=f"{ip}:{port}")
        wait_nodes(nodes, timeout)
        yield f"{ip}:{port}"
    finally:
        if ray.is_initialized():
            ray.shutdown()
        stop_tree(proc)


def worker_node(ip: str, head: str, cpus: int, gpus: int, done_file: Path, timeout: float = 300) -> None:
    """Join the head, stay until the driver writes done_file (or the worker dies), then stop."""
    use_token_auth()
    host, port = head.rsplit(":", 1)
    wait_port(host, int(port), timeout)
    proc = subprocess.Popen(worker_command(ip, head, cpus, gpus), stdin=subprocess.DEVNULL)
    try:
        while not done_file.exists() and proc.poll() is None:
            time.sleep(2)
    finally:
        stop_tree(proc)
