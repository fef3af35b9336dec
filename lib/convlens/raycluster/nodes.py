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
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from convlens.raycluster.allocation import Allocation, cluster_line, ray_start_args


def use_token_auth() -> None:
    """Head, workers and driver must agree on auth: token mode, with the token that the head
    creates in ~/.ray/auth_token (shared home) or RAY_AUTH_TOKEN exported in the profile's setup."""
    os.environ.setdefault("RAY_AUTH_MODE", "token")


def ray_port(job_id: str) -> int:
    """A GCS port per job, so two allocations sharing a node never collide (6379 is left alone)."""
    return 20000 + int(str(job_id).split("_")[0]) % 2500 * 4


def ray_bin() -> str:
    """This Python's `ray`: beside it (a virtualenv), else on PATH (an image's system Python puts it
    in /usr/local/bin)."""
    beside = Path(sys.executable).with_name("ray")
    return str(beside) if beside.is_file() else shutil.which("ray") or str(beside)


def common_args(alloc: Allocation) -> list[str]:
    # record style without colour: the job log is a file, and its banner goes to ray_log_path anyway
    return [*ray_start_args(alloc), "--disable-usage-stats", "--log-style=record", "--log-color=false", "--block"]


def temp_dir(port: int) -> str:
    # Private to the job: `ray start` records its address in <temp dir>/ray_current_cluster, and
    # in the shared /tmp/ray every later plain ray.init() on the node would try to join it.
    return f"/tmp/convlens-ray-{port}"


def head_command(ip: str, port: int, alloc: Allocation) -> list[str]:
    """`ray start --head` on ports derived from `port` (port..port+3)."""
    return [ray_bin(), "start", "--head", f"--node-ip-address={ip}", f"--port={port}",
            f"--temp-dir={temp_dir(port)}",
            f"--dashboard-agent-listen-port={port + 1}", f"--dashboard-agent-grpc-port={port + 2}",
            f"--dashboard-port={port + 3}",
            *common_args(alloc)]


def worker_command(ip: str, head: str, alloc: Allocation) -> list[str]:
    # A temp dir of the node's own: where nodes share /tmp (the test cluster's namespaces), two
    # log monitors would otherwise both forward this node's worker output, every line twice.
    port = int(head.rsplit(":", 1)[1])
    return [ray_bin(), "start", f"--address={head}", f"--node-ip-address={ip}", f"--temp-dir={temp_dir(port)}-{ip}",
            *common_args(alloc)]


def ray_log_path(name: str) -> Path:
    """Where a `ray start` of this job writes its own output: its banner (advice to run `ray stop`,
    which would stop every Ray on a shared node) and the IP probe's warning of a node without
    internet. The job's folder on shared storage, beside its Slurm logs."""
    return Path(os.environ.get("CONVLENS_SLURM_FOLDER", ".")) / f"ray_start_{name}.log"


def start_ray(command: list[str], head: str, log: Path) -> subprocess.Popen:
    """Run `ray start ... --block`; its output goes to log, or to the job log with --verbose."""
    from convlens.raycluster.env import verbose
    out = None
    if not verbose():
        log.parent.mkdir(parents=True, exist_ok=True)
        out = open(log, "ab")  # noqa: SIM115 - the child holds it; closed here right after the fork
    try:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT if out else None, env=with_address(head))
    finally:
        if out:
            out.close()


def log_tail(log: Path, lines: int = 15) -> str:
    if not log.is_file():
        return ""
    return f"\n--- last lines of {log}:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def with_address(head: str) -> dict:
    """The environment of a `ray start`: its raylet passes RAY_ADDRESS on to every worker and
    actor, whose state-API calls (Ray Train's placement group cleaner) then reach this cluster
    instead of guessing among every Ray running on the machine. Ray 2.60 answers SIGTERM by
    draining the node for up to 30 s (for Ray Serve's proxies), which only delays the end of a
    job here: stop_tree then waited 10 s for each node and killed it. No drain unless the user
    asks for one."""
    return {"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0", **os.environ, "RAY_ADDRESS": head}


def wait_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None,
              log: Path | None = None) -> None:
    """Until host:port accepts connections; fails early if proc (our `ray start`, writing to log) has exited."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"`{' '.join(proc.args)}` exited with status {proc.returncode}"
                               f"{log_tail(log) if log else ''}")
        try:
            socket.create_connection((host, port), timeout=2).close()
            return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"Ray head {host}:{port} not reachable after {timeout:.0f} s")


def wait_nodes(n: int, timeout: float, started: float, alloc: Allocation) -> None:
    """Block until n raylets are alive in the connected cluster (started: when the head was)."""
    import ray
    deadline = time.time() + timeout
    while True:
        alive = sum(node["Alive"] for node in ray.nodes())
        if alive >= n:
            print(cluster_line(alive, time.time() - started, ray.cluster_resources(), alloc), flush=True)
            return
        if time.time() > deadline:
            raise TimeoutError(f"only {alive} of {n} Ray nodes joined after {timeout:.0f} s")
        time.sleep(1)


def stop_tree(proc: subprocess.Popen) -> None:
    """SIGTERM the process we started and all its descendants, SIGKILL what remains after 10 s."""
    import ray  # noqa: F401  (puts the psutil that Ray bundles on the path)
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
def head_node(ip: str, port: int, nodes: int, alloc: Allocation, timeout: float = 300):
    """Start the head, connect this process as the driver, wait for all nodes; tear down after."""
    import ray
    use_token_auth()
    started = time.time()
    proc = start_head(ip, port, alloc, timeout)
    try:
        wait_nodes(nodes, timeout, started, alloc)
        yield f"{ip}:{port}"
    finally:
        if ray.is_initialized():
            for node in lost_nodes():
                print(f"[convlens] Ray node {node} was lost during the job", file=sys.stderr, flush=True)
            ray.shutdown()
        stop_tree(proc)


def start_head(ip: str, port: int, alloc: Allocation, timeout: float, tries: int = 3) -> subprocess.Popen:
    """`ray start --head`, and this process connected to it as the driver. Ray gives its raylet a
    fixed 30 s to register, which an overloaded node can miss; the head is then started again."""
    import ray
    from convlens.raycluster.env import job_runtime_env, log_level
    os.environ["RAY_ADDRESS"] = f"{ip}:{port}"
    log = ray_log_path("head")
    for attempt in range(1, tries + 1):
        proc = start_ray(head_command(ip, port, alloc), f"{ip}:{port}", log)
        try:
            wait_port(ip, port, timeout, proc, log)
            ray.init(address=f"{ip}:{port}", logging_level=log_level(), runtime_env=job_runtime_env())
            print(f"[convlens] Ray head at {ip}:{port}: {alloc.describe()}; `ray start`'s own output: {log}",
                  flush=True)
            return proc
        except (RuntimeError, ConnectionError) as err:
            ray.shutdown()
            stop_tree(proc)
            if attempt == tries:
                raise
            print(f"[convlens] Ray head on {ip} did not start ({err}); starting it again", flush=True)
            wait_port_free(ip, port)


def wait_port_free(host: str, port: int, timeout: float = 30) -> None:
    """Until nothing listens on host:port any more (a stopped head's GCS)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
        except OSError:
            return
        time.sleep(1)


def worker_node(name: str, ip: str, head: str, alloc: Allocation, done_file: Path, rejoins: int = 2,
                timeout: float = 300) -> None:
    """Join the head and stay until the driver writes done_file, then stop. If this node's Ray
    dies before that (a killed raylet), start it again and rejoin, up to `rejoins` times, so
    that a run retrying its lost workers (run.max_failures) finds the node back."""
    use_token_auth()
    host, port = head.rsplit(":", 1)
    for attempt in range(rejoins + 1):
        wait_port(host, int(port), timeout)
        log = ray_log_path(name)
        proc = start_ray(worker_command(ip, head, alloc), head, log)
        print(f"[convlens] {name} ({ip}) joining Ray head {head}: {alloc.describe()}; `ray start`'s own "
              f"output: {log}", flush=True)
        try:
            while not done_file.exists() and proc.poll() is None:
                time.sleep(2)
        finally:
            stop_tree(proc)
        if done_file.exists():
            return
        print(f"[convlens] Ray on node {name} ({ip}) exited with status {proc.returncode} before the job "
              f"ended" + (f"; rejoining {head} ({attempt + 1} of {rejoins})" if attempt < rejoins else ""),
              flush=True)
    raise RuntimeError(f"Ray on node {name} ({ip}) was lost {rejoins + 1} times; giving up")


def node_address(name: str, shared: bool = True) -> str:
    """The IP address other nodes reach Slurm node `name` at: its NodeAddr in the cluster's
    config (the node name itself on most clusters), resolved. shared (more than one node): a
    loopback address is refused, no other node could join a Ray head there (Debian maps the
    host name to 127.0.1.1)."""
    try:
        out = subprocess.run(["scontrol", "show", "node", "-o", name], capture_output=True, text=True).stdout
    except FileNotFoundError:  # no scontrol inside a container (profile.container): the name, as most NodeAddrs
        out = ""
    addr = next((t.split("=", 1)[1] for t in out.split() if t.startswith("NodeAddr=")), name)
    ip = socket.gethostbyname(addr)
    if shared and ip.startswith("127."):
        raise RuntimeError(f"node {name} resolves to the loopback address {ip}; other nodes cannot reach it "
                           f"(set its NodeAddr, or map {addr} to the node's network address)")
    return ip


def lost_nodes() -> list[str]:
    """`name (address)` of every Ray node of this cluster that has died."""
    import ray
    return [f"{n['NodeManagerHostname']} ({n['NodeManagerAddress']})" for n in ray.nodes() if not n["Alive"]]


def check_writable(path: str) -> None:
    """Fail unless every node of the Ray cluster can create a file in `path` (the shared runs root)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    from convlens.base.errors import ConfigError
    probe = ray.remote(num_cpus=0)(write_error)
    nodes = [n for n in ray.nodes() if n["Alive"]]
    errors = ray.get([probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                      .remote(path) for n in nodes])
    bad = [f"node {n['NodeManagerHostname']} ({n['NodeManagerAddress']}): {err}"
           for n, err in zip(nodes, errors) if err]
    if bad:
        raise ConfigError(f"runs_root {path} is not writable on {'; '.join(bad)}. Every node must mount the "
                          f"same shared storage at the same path")


def write_error(path: str) -> str | None:
    """Why a file cannot be created in path on this node, or None."""
    import tempfile
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".convlens-write-check-"):
            return None
    except OSError as err:
        return str(err)
