"""The sandbox's launcher: the first code that runs in a sandboxed interpreter (trusted, stdlib only).

:class:`~symgen_datasets.verifiers.sandbox.Sandbox` runs this file's text with
``python -I -S -B -c`` and writes a JSON job to its standard input. The launcher:

1. **isolates** (``isolation == "namespaces"``, the layer used where bubblewrap is missing): new
   mount, pid, network, IPC and UTS namespaces (and a user namespace when not run as root); a
   root file system of its own (a read-only view of the interpreter's prefix, ``/usr`` and the
   library folders, ``/dev/null``-like devices, ``/proc`` of the new pid namespace, and the
   private read-write ``/sandbox`` folder) entered with ``pivot_root``; then the run's uid drops
   to 65534 (root) or every capability is dropped (user namespace). Under bubblewrap, bubblewrap
   has done the same before the launcher starts.
2. **confines** (every isolation): ``PR_SET_NO_NEW_PRIVS`` and a seccomp filter (x86-64 and
   aarch64) that denies ``execve``, ``ptrace``, ``process_vm_*``, ``pidfd_*``, ``prlimit`` on
   another process, mounts, ``chroot``, ``pivot_root``, ``unshare``/``setns`` and namespace flags
   of ``clone`` (``clone3`` answers ENOSYS so that libc falls back to ``clone``), sockets other
   than ``AF_UNIX``, extended attributes, ``setsid``, keys, ``bpf``, ``perf_event_open``,
   ``userfaultfd``, ``io_uring``, module loading, ``kexec``, ``reboot``, swap and ``acct``;
   resource limits (CPU time, address space, file size, open files, processes).
3. **splits trust**: this process (the *judge*) forks a *candidate* process that alone executes
   generated code, behind a CPython audit hook (defence in depth only). The judge talks to it
   over two pipes, one call at a time, and alone writes the verdict on standard output: the
   candidate's standard output goes to standard error, it holds no descriptor of the verdict's
   file, and the judge is not dumpable (its ``/proc/PID/fd`` cannot be opened). A candidate that
   prints a results marker, exits early or kills itself therefore forges nothing: the verdict
   is the judge's own evaluation of the values the candidate returned.

Jobs (one JSON object):

* ``{"mode": "program", "source": ...}``: run a whole program; its output is the run's output;
  the exit status is the program's.
* ``{"mode": "calls", "prefix": ..., "calls": [...], "per_call_s": ...}``: load ``prefix`` (the
  problem's prompt with a candidate's body) in the candidate process, evaluate each call
  expression there; verdict ``{"outputs": [["value", repr] | ["raise", type name], ...]}``.
  A call past ``per_call_s`` is ``["raise", "TimeoutError"]`` and a fresh candidate process
  serves the next one.
* ``{"mode": "test", "prefix": ..., "prompt": ..., "test": ..., "entry_point": ...}``: the
  judge loads the problem's ``prompt`` (its helper functions, its docstring-only entry point)
  and ``test``, and runs ``check(candidate)`` where each call of ``candidate`` is executed by
  the candidate process and its result comes back as ``repr`` text, rebuilt with
  :func:`ast.literal_eval` (a value with no literal form fails the call). Verdict
  ``{"passed": true}`` or ``{"passed": false, "error": ...}``.

Common job fields: ``isolation`` (``bubblewrap``, ``namespaces``, ``none``), ``limits``
(``cpu_s``, ``memory_bytes``, ``file_bytes``, ``nproc``), ``sandbox`` (the working folder as
the program sees it), ``readable`` (folders the audit hook lets the program read), and for
namespaces ``work`` (the host folder behind ``/sandbox``) and ``root`` (an empty host folder
to build the new root on).
"""

import ast
import ctypes
import json
import os
import pickle
import platform
import resource
import select
import signal
import struct
import sys
import traceback

MARKER = "__SYMGEN_VERDICT__"
MAX_REPLY = 1 << 20
NOBODY = 65534

# ---------------------------------------------------------------------------------------- kernel
CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x02000000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWTIME = 0x10000000, 0x20000000, 0x40000000, 0x00000080
NAMESPACE_FLAGS = (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID
                   | CLONE_NEWNET | CLONE_NEWTIME)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND = 1, 2, 4, 8, 32, 4096
MS_REC, MS_PRIVATE = 16384, 1 << 18
MNT_DETACH = 2
PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, PR_CAPBSET_DROP = 4, 38, 22, 24
SECCOMP_MODE_FILTER = 2
AF_UNIX = 1
EPERM, ENOSYS = 1, 38

#: Syscall numbers: (x86-64, aarch64). Numbers from 403 on are the same on both.
SYSCALLS = {
    "execve": (59, 221), "execveat": (322, 281), "ptrace": (101, 117), "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271), "pidfd_open": (434, 434), "pidfd_send_signal": (424, 424),
    "pidfd_getfd": (438, 438), "kcmp": (312, 272), "mount": (165, 40), "umount2": (166, 39),
    "pivot_root": (155, 41), "chroot": (161, 51), "unshare": (272, 97), "setns": (308, 268),
    "open_tree": (428, 428), "move_mount": (429, 429), "fsopen": (430, 430), "fsconfig": (431, 431),
    "fsmount": (432, 432), "fspick": (433, 433), "mount_setattr": (442, 442),
    "setxattr": (188, 5), "lsetxattr": (189, 6), "fsetxattr": (190, 7), "removexattr": (197, 14),
    "lremovexattr": (198, 15), "fremovexattr": (199, 16), "setsid": (112, 157), "keyctl": (250, 219),
    "add_key": (248, 217), "request_key": (249, 218), "bpf": (321, 280), "perf_event_open": (298, 241),
    "userfaultfd": (323, 282), "io_uring_setup": (425, 425), "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427), "init_module": (175, 105), "finit_module": (313, 273),
    "delete_module": (176, 106), "kexec_load": (246, 104), "kexec_file_load": (320, 294), "reboot": (169, 142),
    "swapon": (167, 224), "swapoff": (168, 225), "acct": (163, 89), "open_by_handle_at": (304, 265),
    "name_to_handle_at": (303, 264), "syslog": (103, 116), "quotactl": (179, 60),
    # with an argument check below
    "clone": (56, 220), "clone3": (435, 435), "prlimit64": (302, 261), "socket": (41, 198),
}
#: Not filtered: used to drop capabilities.
CAPSET = (126, 91)
ARCHES = {"x86_64": (0, 0xC000003E), "aarch64": (1, 0xC00000B7)}


def libc():
    return ctypes.CDLL(None, use_errno=True)


def check(result, what):
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def syscall_number(name):
    column, _ = ARCHES[platform.machine()]
    return SYSCALLS[name][column]


def seccomp_filter():
    """The BPF program (a list of ``(code, jt, jf, k)``); ``None`` on an unknown architecture."""
    machine = platform.machine()
    if machine not in ARCHES:
        return None
    column, audit_arch = ARCHES[machine]
    LD_W_ABS, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, kill = 0x7FFF0000, 0x80000000
    errno = lambda value: 0x00050000 | value  # noqa: E731
    program = [(LD_W_ABS, 0, 0, 4), (JEQ, 1, 0, audit_arch), (RET, 0, 0, kill), (LD_W_ABS, 0, 0, 0)]
    if machine == "x86_64":  # the x32 ABI's numbers
        program += [(JGE, 0, 1, 0x40000000), (RET, 0, 0, errno(EPERM))]
    checked = {"clone", "clone3", "prlimit64", "socket"}
    for name, numbers in SYSCALLS.items():
        if name not in checked:
            program += [(JEQ, 0, 1, numbers[column]), (RET, 0, 0, errno(EPERM))]
    program += [(JEQ, 0, 1, SYSCALLS["clone3"][column]), (RET, 0, 0, errno(ENOSYS))]
    arg0 = (LD_W_ABS, 0, 0, 16)  # low 32 bits of args[0] (little-endian)
    # clone: no namespace flags
    program += [(JEQ, 0, 4, SYSCALLS["clone"][column]), arg0, (JSET, 0, 1, NAMESPACE_FLAGS),
                (RET, 0, 0, errno(EPERM)), (RET, 0, 0, allow)]
    # prlimit64: on itself only (pid 0)
    program += [(JEQ, 0, 4, SYSCALLS["prlimit64"][column]), arg0, (JEQ, 1, 0, 0),
                (RET, 0, 0, errno(EPERM)), (RET, 0, 0, allow)]
    # socket: AF_UNIX only
    program += [(JEQ, 0, 4, SYSCALLS["socket"][column]), arg0, (JEQ, 1, 0, AF_UNIX),
                (RET, 0, 0, errno(EPERM)), (RET, 0, 0, allow)]
    program += [(RET, 0, 0, allow)]
    return program


def install_seccomp():
    """``PR_SET_NO_NEW_PRIVS`` then the filter; returns False on an unknown architecture."""
    program = seccomp_filter()
    c = libc()
    check(c.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    if program is None:
        return False
    buffer = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *op) for op in program))

    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = Fprog(len(program), ctypes.cast(buffer, ctypes.c_void_p))
    check(c.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0), "seccomp")
    return True


def drop_capabilities():
    """Every capability of this process gone (permitted, effective, inheritable, bounding)."""
    c = libc()
    for cap in range(64):
        c.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    header = struct.pack("=Ii", 0x20080522, 0)
    data = bytes(24)
    check(c.syscall(CAPSET[ARCHES[platform.machine()][0]], header, data), "capset")


def mount(c, source, target, fstype, flags, data=None):
    check(c.mount(source and source.encode(), target.encode(), fstype and fstype.encode(), flags,
                  data and data.encode()), f"mount {source or ''} on {target}")


def isolate(job):
    """New namespaces and a root of the sandbox's own; returns in the pid namespace's first process
    (pid 1). The calling process waits for it and exits with its status."""
    c = libc()
    uid, gid = os.getuid(), os.getgid()
    root_user = os.geteuid() == 0
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | (0 if root_user else CLONE_NEWUSER)
    check(c.unshare(flags), "unshare")
    if not root_user:
        with open("/proc/self/setgroups", "w") as handle:
            handle.write("deny")
        with open("/proc/self/uid_map", "w") as handle:
            handle.write(f"{uid} {uid} 1")
        with open("/proc/self/gid_map", "w") as handle:
            handle.write(f"{gid} {gid} 1")
    pid = os.fork()
    if pid:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _, status = os.waitpid(pid, 0)
        os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
    # pid 1 of the new pid namespace: when it exits, every process of the namespace is killed
    mount(c, None, "/", None, MS_REC | MS_PRIVATE)
    root = job["root"]
    mount(c, "tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    for path in sorted(set([job["python_prefix"], "/usr", "/lib", "/lib64", "/lib32", "/bin"])):
        inside = root + path
        if os.path.islink(path):
            os.makedirs(os.path.dirname(inside), exist_ok=True)
            os.symlink(os.readlink(path), inside)
        elif os.path.isdir(path):
            os.makedirs(inside, exist_ok=True)
            mount(c, path, inside, None, MS_BIND | MS_REC)
            mount(c, None, inside, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.makedirs(root + "/dev")
    for device in ("null", "zero", "random", "urandom"):
        open(f"{root}/dev/{device}", "w").close()
        mount(c, f"/dev/{device}", f"{root}/dev/{device}", None, MS_BIND)
    os.makedirs(root + "/proc")
    try:
        mount(c, "proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError:
        pass  # a /proc with masked files (some containers) cannot be mounted again: none then
    os.makedirs(root + job["sandbox"])
    mount(c, job["work"], root + job["sandbox"], None, MS_BIND)
    mount(c, None, root + job["sandbox"], None, MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV)
    os.chdir(root)
    check(c.syscall(syscall_number("pivot_root"), b".", b"."), "pivot_root")
    check(c.umount2(b".", MNT_DETACH), "umount the old root")
    os.chdir("/")
    mount(c, None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir(job["sandbox"])
    c.sethostname(b"sandbox", 7)
    if root_user:
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)  # every capability goes with uid 0
    else:
        drop_capabilities()


def set_limits(limits):
    for limit, value in ((resource.RLIMIT_CPU, limits["cpu_s"]), (resource.RLIMIT_AS, limits["memory_bytes"]),
                         (resource.RLIMIT_FSIZE, limits["file_bytes"]), (resource.RLIMIT_NOFILE, 64),
                         (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NPROC, limits["nproc"])):
        try:
            resource.setrlimit(limit, (value, value))
        except (ValueError, OSError):
            pass


# ------------------------------------------------------------------------------ the audit hook
DENIED = {"os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "subprocess.Popen",
          "os.kill", "os.killpg", "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo",
          "socket.gethostbyname", "ctypes.dlopen", "ctypes.dlsym", "ctypes.call_function", "ctypes.cdata",
          "sys.addaudithook", "os.chroot", "os.setuid", "os.setgid", "pty.spawn", "_posixsubprocess.fork_exec"}
PATH_CHANGES = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link", "os.symlink",
                "os.truncate", "os.utime", "os.chdir", "os.chflags", "os.lchflags", "os.mkfifo", "os.mknod",
                "shutil.rmtree", "shutil.copyfile", "shutil.move"}
LISTINGS = {"os.listdir", "os.scandir", "glob.glob"}


def install_audit_hook(readable, writable):
    """Defence in depth only: a program that controls its interpreter can switch it off."""
    inside = lambda path, root: path == root or path.startswith(root.rstrip("/") + "/")  # noqa: E731
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


# ------------------------------------------------------------------------- judge and candidate
def send(fd, payload):
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    os.write(fd, struct.pack(">I", len(data)))
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def receive(fd, deadline=None):
    """One frame, or ``None`` at end of file; :class:`TimeoutError` past ``deadline`` seconds."""
    def read(size):
        data = b""
        while len(data) < size:
            if deadline is not None and not select.select([fd], [], [], deadline)[0]:
                raise TimeoutError
            chunk = os.read(fd, size - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    header = read(4)
    if header is None:
        return None
    size = struct.unpack(">I", header)[0]
    if size > MAX_REPLY:
        raise ValueError("reply too large")
    return read(size)


class Candidate:
    """The forked process that alone runs generated code."""

    def __init__(self, job, serve, keep_stdout=False):
        requests, self.to_candidate = os.pipe()
        self.from_candidate, replies = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            try:
                os.close(self.to_candidate)
                os.close(self.from_candidate)
                if not keep_stdout:
                    os.dup2(2, 1)  # the verdict's descriptor is gone: the candidate's prints go to stderr
                os.closerange(3, requests)
                os.closerange(requests + 1, replies)
                os.closerange(replies + 1, 4096)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                install_audit_hook(job["readable"] + [job["sandbox"]], job["sandbox"])
                code = serve(job, requests, replies)
            except BaseException:  # noqa: BLE001 - whatever the program did, this process ends here
                traceback.print_exc()
                code = 1
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except BaseException:  # noqa: BLE001
                pass
            os._exit(code)
        os.close(requests)
        os.close(replies)

    def ask(self, request, timeout):
        send(self.to_candidate, pickle.dumps(request))
        return receive(self.from_candidate, timeout)

    def close(self):
        for fd in (self.to_candidate, self.from_candidate):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.kill(self.pid, signal.SIGKILL)
        except OSError:
            pass
        return reap(self.pid)


def reap(pid):
    _, status = os.waitpid(pid, 0)
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def serve_program(job, requests, replies):
    namespace = {"__name__": "__main__"}
    exec(compile(job["source"], "<program>", "exec"), namespace)
    return 0


def serve_function(job, requests, replies):
    """Load the prefix, then answer calls until the judge closes the pipe."""
    namespace = {"__name__": "__main__"}
    try:
        exec(compile(job["prefix"], "<candidate>", "exec"), namespace)
        send(replies, ["loaded"])
    except BaseException as error:  # noqa: BLE001
        send(replies, ["load error", f"{type(error).__name__}: {error}"[:300]])
        return 0
    while True:
        frame = receive(requests)
        if frame is None:
            return 0
        request = pickle.loads(frame)
        try:
            if "call" in request:
                value = eval(request["call"], namespace)
            else:
                value = namespace[job["entry_point"]](*request["args"], **request["kwargs"])
            reply = ["value", repr(value)[: MAX_REPLY // 2]]
        except BaseException as error:  # noqa: BLE001
            reply = ["raise", type(error).__name__, str(error)[:200]]
        send(replies, reply)


def verdict(payload):
    sys.stdout.write(MARKER + json.dumps(payload) + "\n")
    sys.stdout.flush()


def judge_program(job):
    candidate = Candidate(job, serve_program, keep_stdout=True)
    for fd in (candidate.to_candidate, candidate.from_candidate):
        os.close(fd)
    return reap(candidate.pid)


def start(job):
    candidate = Candidate(job, serve_function)
    try:
        loaded = json.loads(receive(candidate.from_candidate, job["load_s"]) or b'["load error", "exited while loading"]')
    except TimeoutError:
        loaded = ["load error", "loading took too long"]
    except (ValueError, OSError):
        loaded = ["load error", "unreadable answer"]
    if not isinstance(loaded, list) or loaded[:1] != ["loaded"]:
        candidate.close()
        return None, str(loaded[1] if isinstance(loaded, list) and len(loaded) > 1 else loaded)[:300]
    return candidate, None


def parse_reply(frame):
    """A candidate's reply as ``[kind, text, message]`` strings; anything else says the process
    is gone or misbehaved."""
    try:
        reply = json.loads(frame) if frame else None
    except ValueError:
        reply = None
    if (isinstance(reply, list) and 2 <= len(reply) <= 3 and reply[0] in ("value", "raise")
            and all(isinstance(item, str) for item in reply)):
        return reply + [""] * (3 - len(reply)), True
    return ["raise", "SystemExit", "the candidate process ended"], False


def judge_calls(job):
    outputs, candidate = [], None
    for call in job["calls"]:
        if candidate is None:
            candidate, error = start(job)
            if candidate is None:
                verdict({"error": error})
                return 0
        try:
            reply, alive = parse_reply(candidate.ask({"call": call}, job["per_call_s"]))
        except TimeoutError:
            reply, alive = ["raise", "TimeoutError", ""], False
        except (ValueError, OSError):
            reply, alive = ["raise", "SystemExit", ""], False
        if not alive:
            candidate.close()  # stuck or gone: a fresh process serves the next call
            candidate = None
        outputs.append(reply[:2])
    if candidate is not None:
        candidate.close()
    verdict({"outputs": outputs})
    return 0


class CandidateFailed(Exception):
    """A call of the candidate raised, took too long, or returned a value with no literal form."""


def judge_test(job):
    candidate, error = start(job)
    if candidate is None:
        verdict({"passed": False, "error": error})
        return 0

    def proxy(*args, **kwargs):
        try:
            reply, _ = parse_reply(candidate.ask({"args": args, "kwargs": kwargs}, job["per_call_s"]))
        except TimeoutError:
            raise CandidateFailed("a call took too long") from None
        except (ValueError, OSError):
            reply = ["raise", "SystemExit", "the candidate process ended"]
        if reply[0] != "value":
            raise CandidateFailed(f"{reply[1]}: {reply[2]}" if reply[2] else reply[1])
        try:
            return ast.literal_eval(reply[1])
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise CandidateFailed(f"returned a value with no literal form: {reply[1][:80]}") from None

    namespace = {"__name__": "__symgen_test__"}
    try:
        exec(compile(job["prompt"], "<prompt>", "exec"), namespace)
        exec(compile(job["test"], "<test>", "exec"), namespace)
        namespace[job["entry_point"]] = proxy
        namespace["check"](proxy)
        result = {"passed": True}
    except BaseException as failure:  # noqa: BLE001
        text = f"{type(failure).__name__}: {failure}" if str(failure) else type(failure).__name__
        result = {"passed": False, "error": ("test not passed: " + text)[:300]}
    finally:
        candidate.close()
    verdict(result)
    return 0


def main():
    job = json.loads(sys.stdin.buffer.read())
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    if job["isolation"] == "namespaces":
        isolate(job)
    elif job["isolation"] == "none" and os.geteuid() == 0:
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
    try:
        install_seccomp()
    except OSError:
        if job["isolation"] != "none":
            raise
    libc().prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # no /proc/PID/fd of the judge for the candidate
    set_limits(job["limits"])
    judge = {"program": judge_program, "calls": judge_calls, "test": judge_test}[job["mode"]]
    sys.stdout.flush()
    os._exit(judge(job))


if __name__ == "__main__":
    main()
