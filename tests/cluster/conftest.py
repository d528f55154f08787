"""A real single-node SLURM cluster on localhost (Debian's slurm-wlm and munge), started
for the tests and stopped by pid at the end; skipped with the reason when it cannot start.

Install: ``apt-get install -y slurm-wlm munge`` (``make test`` does it when root).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

CONF = """\
ClusterName=mixnet
SlurmctldHost=localhost
SlurmUser=root
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
StateSaveLocation={state}/ctld
SlurmdSpoolDir={state}/d
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldLogFile={state}/slurmctld.log
SlurmdLogFile={state}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={state}/jobcomp.txt
MpiDefault=none
ReturnToService=2
SchedulerParameters=defer_batch
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""


def _wait(condition, seconds: float, what: str, logs=()) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            tails = [f"{log.name}: {log.read_text().strip().splitlines()[-1]}"
                     for log in logs if log.exists() and log.read_text().strip()]
            pytest.skip(f"SLURM test cluster: {what} within {seconds:.0f} s"
                        + "".join(f"; {tail}" for tail in tails))
        time.sleep(0.5)


def _free_ports(count: int) -> list[int]:
    """Ports free now: a daemon left by an interrupted run must not hold the ones used here."""
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """Start munged, slurmctld and slurmd; yield the environment that reaches them."""
    missing = [tool for tool in ("munged", "slurmctld", "slurmd", "sbatch", "runuser")
               if not shutil.which(tool)]
    if missing:
        pytest.skip(f"SLURM test cluster: {', '.join(missing)} not installed "
                    "(apt-get install -y slurm-wlm munge)")
    if os.geteuid() != 0:
        pytest.skip("SLURM test cluster: starting munged and slurmd needs root")
    state = tmp_path_factory.mktemp("slurm")
    pids: list[int] = []
    # munged runs as user munge: its folder must not sit below pytest's private (0700) tmp
    munge_dir = Path(tempfile.mkdtemp(prefix="mixnet-munge-"))
    key = munge_dir / "munge.key"
    key.write_bytes(os.urandom(1024))
    munge_socket = munge_dir / "munge.socket"
    for path in (munge_dir, key):
        shutil.chown(path, "munge", "munge")
    key.chmod(0o400)
    munge_dir.chmod(0o755)
    subprocess.run(["runuser", "-u", "munge", "--", "munged", "--key-file", str(key),
                    "--socket", str(munge_socket), "--pid-file", str(munge_dir / "munged.pid"),
                    "--log-file", str(munge_dir / "munged.log"), "--seed-file",
                    str(munge_dir / "munged.seed")], check=True)
    _wait(lambda: (munge_dir / "munged.pid").exists(), 10, "munged did not start")
    pids.append(int((munge_dir / "munged.pid").read_text()))
    (state / "ctld").mkdir()
    (state / "d").mkdir()
    conf = state / "slurm.conf"
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2 ** 20 - 1024
    ctld_port, d_port = _free_ports(2)
    conf.write_text(CONF.format(state=state, cpus=os.cpu_count() or 1, memory_mb=memory_mb,
                                ctld_port=ctld_port, d_port=d_port)
                    + f"AuthInfo=socket={munge_socket}\n")
    env = {**os.environ, "SLURM_CONF": str(conf), "LOGNAME": os.environ.get("LOGNAME", "root")}
    logs = (state / "slurmctld.log", state / "slurmd.log")
    try:
        subprocess.run(["slurmctld"], env=env, check=True)
        subprocess.run(["slurmd", "-N", "localhost"], env=env, check=True)
        _wait(lambda: (state / "slurmctld.pid").exists() and (state / "slurmd.pid").exists(),
              15, "the daemons did not start", logs)

        def idle():
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True,
                                 text=True).stdout
            return "idle" in out

        _wait(idle, 30, "the node did not become idle", logs)
        yield env
    finally:
        # every daemon that started, also one whose twin did not
        pids += [int(text) for text in (p.read_text().strip() for p in state.glob("*.pid"))
                 if text]
        for pid in reversed(pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        shutil.rmtree(munge_dir, ignore_errors=True)
