"""A real one-node SLURM cluster in a temporary folder, for the tests.

Needs Debian's ``slurm-wlm`` and ``munge`` packages (``scripts/install-slurm.sh``) and root.
Starts a private ``munged --force`` (own key and socket in the folder), then
``slurmctld -f CONF`` and ``slurmd -f CONF`` in the foreground (``-D``) as child
processes, with this host as controller and as the one node (CPUs=2),
``ProctrackType=proctrack/linuxproc``, ``TaskPlugin=task/none``,
``SelectType=select/cons_tres``, free TCP ports, and state, spool, pid and log paths in the
folder. :meth:`SlurmCluster.env` gives the environment (``SLURM_CONF``) under which
``sbatch``/``squeue`` (and so submitit) talk to it. :meth:`stop` ends exactly the processes
it started. Anything missing raises :class:`SlurmUnavailable` with the reason.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


class SlurmUnavailable(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mem_mb() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return max(1024, int(line.split()[1]) // 1024 - 1024)
    except OSError:
        pass
    return 4096


class SlurmCluster:
    def __init__(self, folder: str | Path, cpus: int = 2):
        self.folder = Path(folder).resolve()
        self.cpus = cpus
        self.procs: list[subprocess.Popen] = []
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.folder / "slurm.conf"

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 60) -> SlurmCluster:
        missing = [b for b in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo") if not shutil.which(b)]
        if missing:
            raise SlurmUnavailable(f"not installed: {', '.join(missing)} (run scripts/install-slurm.sh)")
        if os.geteuid() != 0:
            raise SlurmUnavailable("slurmd must run as root here")
        try:
            socket.gethostbyname(self.host)
        except OSError:
            raise SlurmUnavailable(f"host name {self.host!r} does not resolve") from None
        f = self.folder
        for d in ("state", "spool", "log", "munge"):
            (f / d).mkdir(parents=True, exist_ok=True)
        os.chmod(f / "munge", 0o700)
        key = f / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        self.munge_socket = f / "munge" / "munge.socket"
        self._run_checked(["munged", "--force", f"--key-file={key}", f"--socket={self.munge_socket}",
                           f"--pid-file={f / 'munge' / 'munged.pid'}", f"--log-file={f / 'log' / 'munged.log'}",
                           f"--seed-file={f / 'munge' / 'munged.seed'}"], "munged")
        self.conf.write_text(self._conf())
        for daemon in ("slurmctld", "slurmd"):
            log = open(f / "log" / f"{daemon}.out", "w")
            self.procs.append(subprocess.Popen([daemon, "-D", "-f", str(self.conf)], stdout=log, stderr=subprocess.STDOUT,
                                               env=self.env(), cwd=f))
            if daemon == "slurmctld":
                time.sleep(1.0)
        deadline = time.time() + timeout
        state = ""
        while time.time() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    self.stop()
                    raise SlurmUnavailable(f"{p.args[0]} exited with status {p.returncode}:\n{self.logs()}")
            r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=self.env())
            state = (r.stdout or r.stderr).strip()
            if r.returncode == 0 and state.startswith(("idle", "mixed", "allocated")):
                return self
            time.sleep(0.5)
        self.stop()
        raise SlurmUnavailable(f"the node did not become idle within {timeout:.0f} s (sinfo: {state!r}):\n{self.logs()}")

    def _run_checked(self, cmd: list[str], what: str) -> None:
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise SlurmUnavailable(f"{what} failed to start (status {r.returncode}): {r.stderr.strip() or r.stdout.strip()}")

    def stop(self) -> None:
        if self.procs:  # cancel what is still queued or running while the controller can hear it
            subprocess.run(["scancel", "--full", "--quiet", "--user", str(os.getuid())], capture_output=True, env=self.env(),
                           timeout=30, check=False)
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs = []
        pid_file = self.folder / "munge" / "munged.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().strip()), 15)  # the munged this cluster started, by its pid
            except (OSError, ValueError):
                pass
        self._kill_leftovers()

    def _kill_leftovers(self) -> None:
        """Job steps outlive slurmd (slurmstepd re-parents to init): SIGKILL every process that
        belongs to this cluster — its cwd is in the cluster folder or its SLURM_CONF is ours."""
        folder, mine = str(self.folder.resolve()), f"SLURM_CONF={self.conf}".encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                cwd = os.readlink(proc / "cwd")
                ours = cwd.startswith(folder) or mine in (proc / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if ours:
                try:
                    os.kill(int(proc.name), 9)
                except OSError:
                    pass

    def env(self) -> dict:
        return dict(os.environ, SLURM_CONF=str(self.conf))

    def logs(self) -> str:
        out = []
        for p in sorted((self.folder / "log").glob("*")):
            try:
                out.append(f"--- {p.name}\n" + p.read_text()[-3000:])
            except OSError:
                pass
        return "\n".join(out)

    def sacct_or_squeue(self, job_ids) -> str | None:
        """What the cluster says about ``job_ids`` (squeue keeps finished jobs for MinJobAge seconds)."""
        r = subprocess.run(["squeue", "-h", "-t", "all", "-j", ",".join(sorted(job_ids)), "-o", "%i %T"],
                           capture_output=True, text=True, env=self.env())
        return r.stdout if r.returncode == 0 else None

    def _conf(self) -> str:
        f = self.folder
        return f"""# written by tests/slurm_cluster.py
ClusterName=ddlnltest
SlurmctldHost={self.host}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={f / 'state'}
SlurmdSpoolDir={f / 'spool'}
SlurmctldPidFile={f / 'slurmctld.pid'}
SlurmdPidFile={f / 'slurmd.pid'}
SlurmctldLogFile={f / 'log' / 'slurmctld.log'}
SlurmdLogFile={f / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={_mem_mb()} State=UNKNOWN
PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
"""


if __name__ == "__main__":  # manual check: start, run one batch job, stop
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        c = SlurmCluster(d)
        try:
            c.start()
        except SlurmUnavailable as e:
            print(f"cannot start: {e}")
            sys.exit(1)
        try:
            out = Path(d) / "job.out"
            r = subprocess.run(["sbatch", "--parsable", "-o", str(out), "--wrap", "hostname; echo ok"], capture_output=True, text=True, env=c.env())
            print("sbatch:", r.returncode, r.stdout.strip(), r.stderr.strip())
            for _ in range(60):
                if out.exists() and "ok" in out.read_text():
                    break
                time.sleep(0.5)
            print("job output:", out.read_text() if out.exists() else "(none)")
        finally:
            c.stop()
