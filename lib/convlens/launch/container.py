"""What the compute nodes run a job with: the Python of the profile, the submitter's own (checked
not to be node-local), or the image's inside a container, with the paths the job needs bound in.

submitit's batch script ends in `srun [SRUN ARGS] PYTHON -u -m submitit.core._submit FOLDER`;
node_command() gives its PYTHON and SRUN ARGS:
- no container: PYTHON is profile.python, or this process's sys.executable by path;
- apptainer:    PYTHON is `apptainer exec [--nv] --bind A,B,... IMAGE python3`;
- pyxis:        PYTHON is `python3`, and SRUN ARGS `--container-image=IMAGE --container-mounts=A:A,B:B,...
                --container-workdir=<submit dir>` (a multi-node job's every task goes through the same srun).
"""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from convlens.base.errors import ConfigError
from convlens.specs.base import read_yaml
from convlens.specs.cluster import ClusterProfile

NODE_LOCAL = ("/tmp", "/var/tmp", "/dev/shm", "/run")  # never shared between the nodes of a cluster
SPEC_SUFFIXES = (".yaml", ".yml")  # a spec file a spec names (a sweep's base, a demo's steps) is read on the node


def node_command(profile: ClusterProfile, paths: list[str]) -> tuple[str, list[str]]:
    """(the shell command that starts Python on every node, srun's extra arguments).
    paths: host paths the job reads or writes (job_paths), bound into a container."""
    box = profile.container
    if box is None:
        return shlex.quote(profile.python or submitter_python(node_local_ok=profile.nodes_on_this_machine)), []
    python = shlex.quote(profile.python or "python3")
    mounts = bind_mounts(paths, box.mounts)
    if box.runtime == "apptainer":
        nv = box.nv if box.nv is not None else profile.gpus_per_node > 0
        words = ["apptainer", "exec", *(["--nv"] if nv else []), "--bind", ",".join(mounts), box.image]
        return f"{shlex.join(words)} {python}", []
    # pyxis has no "same path" shorthand in every version: SRC:SRC; the job's relative paths need its cwd
    same = [m if ":" in m else f"{m}:{m}" for m in mounts]
    return python, [f"--container-image={box.image}", f"--container-mounts={','.join(same)}",
                    f"--container-workdir={Path.cwd()}"]


def submitter_python(node_local_ok: bool = False) -> str:
    """sys.executable, which every node will run by this path: refused where that path is missing
    or (unless node_local_ok) under a folder that is local to each node. Whether a path is shared
    cannot be known from here: a virtualenv on a login node's own disk passes this check and fails
    on the nodes."""
    exe = sys.executable
    if not exe or not os.access(exe, os.X_OK):
        raise ConfigError(f"cannot tell which Python the compute nodes should run (sys.executable = {exe!r}): "
                          f"set `python:` in the cluster profile, or `container:`")
    if node_local_ok:
        return exe
    for path in dict.fromkeys((Path(exe).absolute(), Path(exe).resolve())):  # the venv's link and its target
        local = next((d for d in node_local_dirs() if path.is_relative_to(d)), None)
        if local is not None:
            raise ConfigError(f"the compute nodes would run this Python, {path}, but {local} is local to each "
                              f"node: set `python:` in the cluster profile to an interpreter every node has "
                              f"(a virtualenv on shared storage), or run the job in a `container:`")
    return exe


def node_local_dirs() -> list[Path]:
    tmpdir = os.environ.get("TMPDIR")
    dirs = [*NODE_LOCAL, *([tmpdir] if tmpdir and Path(tmpdir).resolve() != Path("/") else [])]
    return list(dict.fromkeys(Path(d).resolve() for d in dirs))


def job_paths(profile: ClusterProfile, specs: list[dict]) -> list[str]:
    """Host paths a container must bind for these resolved job specs: log_dir, runs_root, the
    submit directory (relative paths in specs), PYTHONPATH, and every absolute path the specs
    name, also inside the spec files they name (a sweep's base, a demo's steps). Outer folders
    only, "/" never. Not found here: the data a run's checkpoint recorded (analyze); add it to
    container.mounts when it lies elsewhere."""
    found = [Path(profile.log_dir).expanduser().resolve(), Path.cwd()]
    if profile.runs_root:
        found.append(Path(profile.runs_root).expanduser().resolve())
    found += [Path(p).resolve() for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    seen: set[Path] = set()
    for spec in specs:
        found += spec_paths(spec, seen)
    return outermost(found)


def spec_paths(value, seen: set[Path]) -> list[Path]:
    """Every absolute (or ~) path among a spec's values, and in the spec files it names."""
    if isinstance(value, dict):
        return [p for v in value.values() for p in spec_paths(v, seen)]
    if isinstance(value, (list, tuple)):
        return [p for v in value for p in spec_paths(v, seen)]
    if not isinstance(value, str):
        return []
    path = Path(value).expanduser()
    out = [path] if value.startswith(("/", "~")) else []
    if value.endswith(SPEC_SUFFIXES) and path.is_file() and path.resolve() not in seen:
        seen.add(path.resolve())
        out += spec_paths(read_yaml(path), seen)
    return out


def outermost(paths: list[Path]) -> list[str]:
    """Each path once, none inside another (binding the outer folder binds it), "/" left out."""
    unique = sorted({Path(os.path.normpath(p)) for p in paths if Path(p) != Path("/")})
    kept: list[Path] = []
    for path in unique:
        if not any(path.is_relative_to(k) for k in kept):
            kept.append(path)
    return [str(p) for p in kept]


def bind_mounts(paths: list[str], extra: list[str]) -> list[str]:
    """The job's paths, then the profile's own mounts (their SRC's ~ expanded), each once."""
    bad = [p for p in paths if "," in p or ":" in p]
    if bad:
        raise ConfigError(f"container: cannot bind {bad[0]}: ',' and ':' separate bind mounts; move or rename it")
    extra = [":".join([str(Path(src).expanduser()), *rest]) for src, *rest in (m.split(":") for m in extra)]
    return list(dict.fromkeys([*paths, *extra]))


def job_folders(specs: list[dict]) -> list[str]:
    """Folders a train spec's job fills that need not exist yet: data.cache_dir, and data.path where
    the job downloads (a first run's ~/.cache/convlens). submit creates them, so a container can bind them."""
    folders = []
    for data in (spec.get("data") for spec in specs):
        if isinstance(data, dict):
            folders += [data["cache_dir"], *([data["path"]] if data.get("download") and data.get("path") else [])]
    return [str(Path(f).expanduser().resolve()) for f in dict.fromkeys(folders)]


def missing_sources(profile: ClusterProfile, paths: list[str], made: list[str] = ()) -> list[str]:
    """Bind sources that do not exist here (Apptainer and pyxis refuse them); log_dir, runs_root and
    `made` (job_folders) are left out, submit creates them."""
    if profile.container is None:
        return []
    made = {*made, *(str(Path(d).expanduser().resolve()) for d in (profile.log_dir, profile.runs_root) if d)}
    sources = [m.split(":")[0] for m in bind_mounts(paths, profile.container.mounts)]
    return [s for s in sources if s not in made and not Path(s).expanduser().exists()]
