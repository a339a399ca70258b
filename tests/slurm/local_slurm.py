"""A throwaway single-node SLURM on this machine: munged, slurmctld and slurmd on 127.0.0.1, every file
in one state directory, stopped by PID. It exists to test `profiles/slurm` against a real scheduler.

    python tests/slurm/local_slurm.py up       # then sbatch, squeue and snakemake's SLURM executor work
    python tests/slurm/local_slurm.py status
    python tests/slurm/local_slurm.py down

Needs root and Debian's packages (`apt-get install -y slurm-wlm munge`). The node is this machine as
`slurmd -C` reports it (CPUs, RealMemory), one partition, and `gpus` fake GPUs (GRES backed by /dev/null and
friends: jobs that ask `--gpus` are scheduled and see CUDA_VISIBLE_DEVICES, but no device is attached).
There is no slurmdbd: `sacct` answers "accounting storage is disabled", so the Snakemake plugin must poll
with `--slurm-status-command squeue` (finished jobs stay in squeue for MinJobAge = 3600 s); finished jobs are
also written, one line each, to `<state>/jobcomp.txt` (jobcomp/filetxt).

/etc/slurm/slurm.conf becomes a link to the generated file while the cluster is up: the plugin's job step
removes SLURM_CONF from the environment of the `srun` it starts inside each job, so clients there read the
default path. A real configuration at that path is never touched (`unavailable()` says so instead).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

DEFAULT_STATE = Path("/tmp/hspreid-slurm")
CONF_LINK = Path("/etc/slurm/slurm.conf")
MARKER = "# hspreid tests/slurm/local_slurm.py"
PARTITION = "local"
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel", "scontrol")
FAKE_GPU_FILES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/urandom")
STOP_ORDER = ("slurmd", "slurmctld", "munged")
PLUGIN, PLUGIN_MIN = "snakemake-executor-plugin-slurm", (2, 7, 1)


def unavailable() -> str | None:
    """Why a local SLURM cannot be started here (one line), or None when it can."""
    if not sys.platform.startswith("linux"):
        return f"a local SLURM needs Linux, this is {sys.platform}"
    if os.geteuid() != 0:
        return "a local SLURM needs root (munged, slurmctld and slurmd run as root here)"
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return f"{', '.join(missing)} not found: apt-get install -y slurm-wlm munge"
    if (CONF_LINK.exists() or CONF_LINK.is_symlink()) and not _ours(CONF_LINK):
        return f"{CONF_LINK} exists and is not this harness's: a real SLURM is configured here, not touching it"
    return None


def plugin_missing() -> str | None:
    """Why the SLURM executor plugin is unusable (one line), or None."""
    try:
        found = version(PLUGIN)
    except PackageNotFoundError:
        return f"{PLUGIN} is not installed: pip install -e '.[slurm]'"
    if tuple(int(x) for x in found.split(".")[:3] if x.isdigit()) < PLUGIN_MIN:
        return f"{PLUGIN} {found} is older than 2.7.1 (it adds --ntasks-per-gpu to GPU jobs): pip install -e '.[slurm]'"
    return None


def _ours(conf: Path) -> bool:
    """Written by this harness, or a dangling link (a killed run's: no configuration for anybody)."""
    try:
        return conf.read_text().startswith(MARKER)
    except OSError:
        return conf.is_symlink()


def _is_state(state: Path) -> bool:
    """`state` holds a configuration this harness wrote (so `up` and `down` may delete it)."""
    conf = state / "slurm.conf"
    return conf.is_file() and _ours(conf)


def state_of() -> Path | None:
    """The state directory of the cluster this harness brought up, from the link at CONF_LINK."""
    if CONF_LINK.is_symlink():
        target = Path(os.readlink(CONF_LINK))
        if target.name == "slurm.conf" and (target.parent / "pids.json").exists():
            return target.parent
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_hardware() -> str:
    """`slurmd -C`'s node line without its NodeName: CPUs, Boards, sockets, cores, threads, RealMemory."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("NodeName="))
    return " ".join(tok for tok in line.split() if not tok.startswith("NodeName="))


def write_config(state: Path, gpus: int) -> dict:
    """slurm.conf and gres.conf in `state`; returns the node name and ports."""
    if not 0 <= gpus <= len(FAKE_GPU_FILES):
        raise ValueError(f"gpus: expected 0..{len(FAKE_GPU_FILES)} fake GPUs, got {gpus}")
    host = socket.gethostname().split(".")[0]
    ctld_port, slurmd_port = _free_port(), _free_port()
    gres = f" Gres=gpu:{gpus}" if gpus else ""
    (state / "slurm.conf").write_text(f"""{MARKER}: a throwaway single-node cluster; `down` removes it.
ClusterName=hspreid
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={state}/munge/munge.socket
CredType=cred/munge
StateSaveLocation={state}/slurmctld
SlurmdSpoolDir={state}/slurmd
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
# No slurmdbd: sacct cannot answer. Finished jobs stay visible to squeue and scontrol for MinJobAge
# seconds (the plugin's squeue status needs >= 3 x its first status delay) and are logged to JobCompLoc.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc={state}/jobcomp.txt
MinJobAge=3600
GresTypes=gpu
NodeName={host} NodeAddr=127.0.0.1 {_node_hardware()}{gres} State=UNKNOWN
PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    (state / "gres.conf").write_text("".join(f"NodeName={host} Name=gpu File={f}\n" for f in FAKE_GPU_FILES[:gpus]))
    return {"node": host, "ctld_port": ctld_port, "slurmd_port": slurmd_port}


def _start(state: Path, name: str, cmd: list[str]) -> subprocess.Popen:
    with open(state / f"{name}.log", "ab") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def _wait(what: str, ready, timeout: float, state: Path, procs: dict[str, subprocess.Popen]) -> None:
    """Poll `ready()` until it holds; raise with the daemons' logs when a daemon died or time ran out."""
    deadline = time.monotonic() + timeout
    while not ready():
        dead = [name for name, proc in procs.items() if proc.poll() is not None]
        if dead or time.monotonic() > deadline:
            what = f"{what} not ready: {', '.join(dead)} exited" if dead else f"{what} not ready after {timeout:.0f} s"
            logs = "\n".join(f"--- {p.name}:\n{p.read_text()[-1500:]}" for p in sorted(state.glob("*.log")))
            raise RuntimeError(f"local SLURM: {what}\n{logs}")
        time.sleep(0.2)


def _node_state(node: str) -> str:
    out = subprocess.run(["sinfo", "-h", "-N", "-n", node, "-o", "%T"], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else ""


def up(state: Path = DEFAULT_STATE, gpus: int = 2, timeout: float = 60.0) -> dict:
    """Start munged, slurmctld and slurmd with a fresh `state` directory; returns the cluster's facts
    (state, node, partition, gpus, pids) once the node is idle. Raises RuntimeError when it does not come up
    (the daemons started so far are stopped)."""
    reason = unavailable()
    if reason:
        raise RuntimeError(f"local SLURM: {reason}")
    state = state.absolute()
    previous = state_of()
    if previous is not None:
        if running(previous):
            raise RuntimeError(f"local SLURM: already up in {previous} (run `down` first)")
        down(previous)  # the remains of a killed run
    if state.exists() and any(state.iterdir()) and not _is_state(state):
        raise RuntimeError(f"local SLURM: {state} is not empty and not a state directory of this harness")
    shutil.rmtree(state, ignore_errors=True)
    for sub in ("munge", "slurmctld", "slurmd"):
        (state / sub).mkdir(parents=True)
    state.chmod(0o755)
    key = state / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    facts = {"state": str(state), "partition": PARTITION, "gpus": gpus, "pids": {}, **write_config(state, gpus)}
    procs: dict[str, subprocess.Popen] = {}

    def start(name: str, cmd: list[str]) -> None:
        procs[name] = _start(state, name, cmd)
        facts["pids"][name] = procs[name].pid
        (state / "pids.json").write_text(json.dumps(facts, indent=1))

    try:
        sock = state / "munge" / "munge.socket"
        start("munged", [
            "munged", "--foreground", "--force", f"--socket={sock}", f"--key-file={key}",
            f"--pid-file={state}/munge/munged.pid", f"--seed-file={state}/munge/munged.seed"])
        _wait("munged", sock.exists, timeout, state, procs)
        if CONF_LINK.is_symlink():
            CONF_LINK.unlink()  # a dangling link of ours from a killed run (unavailable() checked it)
        CONF_LINK.parent.mkdir(parents=True, exist_ok=True)
        CONF_LINK.symlink_to(state / "slurm.conf")
        conf = ["-f", str(state / "slurm.conf")]
        start("slurmctld", ["slurmctld", "-D", *conf])
        start("slurmd", ["slurmd", "-D", "-N", facts["node"], *conf])
        _wait(f"node {facts['node']}", lambda: _node_state(facts["node"]) == "idle", timeout, state, procs)
    except BaseException:
        down(state)
        raise
    return facts


def _alive(pid: int, state: Path) -> bool:
    """The process exists and is one of ours (its command line names the state directory)."""
    try:
        return str(state) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def running(state: Path) -> bool:
    """Every daemon of the cluster in `state` is alive."""
    facts_file = state / "pids.json"
    if not facts_file.exists():
        return False
    pids = json.loads(facts_file.read_text())["pids"]
    return set(pids) == set(STOP_ORDER) and all(_alive(p, state) for p in pids.values())


def down(state: Path | None = None, timeout: float = 20.0) -> None:
    """Cancel every job, stop the daemons by PID (SIGTERM, SIGKILL after `timeout`), remove the link and
    the state directory."""
    state = (state or state_of() or DEFAULT_STATE).absolute()
    facts_file = state / "pids.json"
    pids = json.loads(facts_file.read_text())["pids"] if facts_file.exists() else {}
    if pids.get("slurmctld") and _alive(pids["slurmctld"], state):
        jobs = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
        if jobs:
            subprocess.run(["scancel", *jobs], capture_output=True)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and subprocess.run(
                    ["squeue", "-h", "-t", "PD,R,CG", "-o", "%i"], capture_output=True, text=True).stdout.strip():
                time.sleep(0.5)
    for name in STOP_ORDER:
        pid = pids.get(name)
        if not pid or not _alive(pid, state):
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid, state) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid, state):
            os.kill(pid, signal.SIGKILL)
        try:  # reap it when this process started it
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
    if CONF_LINK.is_symlink() and Path(os.readlink(CONF_LINK)).parent == state:
        CONF_LINK.unlink()
    if _is_state(state):
        shutil.rmtree(state, ignore_errors=True)


def jobs() -> list[dict[str, str]]:
    """Every job slurmctld still holds (finished ones for MinJobAge), as `scontrol -o show job` fields:
    JobId, JobState, Comment (the Snakemake plugin's rule_<rule>_wildcards_...), WorkDir, TresPerJob, ..."""
    out = subprocess.run(["scontrol", "-o", "show", "job"], capture_output=True, text=True, check=True).stdout
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in out.splitlines() if line.startswith("JobId=")]


def status() -> str:
    state = state_of()
    if state is None:
        return "down"
    if not running(state):
        return f"down: a killed run left {state} (`up` or `down` clears it)"
    sinfo = subprocess.run(["sinfo"], capture_output=True, text=True).stdout
    pids = json.loads((state / "pids.json").read_text())["pids"]
    return f"up in {state}, daemons {pids}\n{sinfo}"


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=("up", "down", "status"))
    ap.add_argument("--state", type=Path, default=DEFAULT_STATE, help="state directory (default %(default)s)")
    ap.add_argument("--gpus", type=int, default=2, help="fake GPUs on the node (default %(default)s)")
    args = ap.parse_args(argv)
    if args.action == "up":
        try:
            facts = up(args.state, args.gpus)
        except RuntimeError as e:
            print(e, file=sys.stderr)
            return 1
        print(f"local SLURM up: node {facts['node']}, partition {facts['partition']}, {facts['gpus']} fake GPUs, "
              f"state {facts['state']}")
    elif args.action == "down":
        down(args.state if args.state != DEFAULT_STATE else None)
        print("local SLURM down")
    else:
        print(status())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
