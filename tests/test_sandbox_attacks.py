"""A native-code attacker against the Python sandbox, with and without bubblewrap.

Every attack first switches off the in-process audit hook (as a generated program can: the hook's
state is reachable through ``gc``), then tries its escape twice: through the standard library
and through ``ctypes`` raw system calls. What must stop it is the kernel: namespaces, a read-only
root, the uid drop, seccomp, the pid namespace and cgroup. The second review's cases: commands as
root, reading and writing files outside (a run's ``responses.sqlite`` among them), killing any
process, ``prlimit`` on another process, ``setxattr`` outside, a child that leaves its session
and cgroup to outlive the run, and a forged verdict.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sqlite3
import subprocess
import sys
import time

import pytest

from symgen_datasets.verifiers.python import check_python
from symgen_datasets.verifiers.sandbox import Sandbox, bubblewrap

pytestmark = pytest.mark.skipif(platform.machine() not in ("x86_64", "aarch64"), reason="syscall numbers")

ISOLATIONS = ["namespaces"] + (["bubblewrap"] if bubblewrap() else [])
COLUMN = 0 if platform.machine() == "x86_64" else 1
NR = {name: numbers[COLUMN] for name, numbers in {
    "openat": (257, 56), "kill": (62, 129), "execve": (59, 221), "clone": (56, 220), "setsid": (112, 157),
    "prlimit64": (302, 261), "setxattr": (188, 5), "pidfd_open": (434, 434), "pidfd_send_signal": (424, 424),
    "ptrace": (101, 117), "socket": (41, 198), "write": (1, 64), "read": (0, 63), "mount": (165, 40),
    "unshare": (272, 97), "process_vm_readv": (310, 270)}.items()}

#: Switches the audit hook off (the launcher's hook returns early while its `busy` list is not
#: empty), and loads libc through ctypes, which the hook would have refused.
HOOK_OFF = """
import gc
for obj in gc.get_objects():
    if type(obj).__name__ == "function" and obj.__name__ == "hook" and obj.__closure__:
        for cell in obj.__closure__:
            if cell.cell_contents == []:
                cell.cell_contents.append(1)
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
def sys_(name, *args):
    result = libc.syscall(NR[name], *args)
    return result, ctypes.get_errno()
"""


@pytest.fixture(params=ISOLATIONS)
def sandbox(request):
    return Sandbox(timeout_s=5.0, isolation=request.param)


def attack(sandbox: Sandbox, body: str):
    return sandbox.run(f"NR = {NR!r}\n" + HOOK_OFF + body)


def test_the_hook_really_is_off_so_the_kernel_layers_are_what_is_tested(sandbox):
    result = attack(sandbox, "print('pid', libc.getpid(), 'uid', libc.getuid())")
    assert result.status == "ok", result
    pid, uid = result.stdout.split()[1], result.stdout.split()[3]
    assert int(pid) <= 3 and uid == "65534"  # a pid namespace of its own, nobody


@pytest.mark.parametrize("way", ["stdlib", "ctypes"])
def test_no_command_runs(sandbox, way):
    body = {"stdlib": "import os\nprint('status', os.system('id > /sandbox/pwned'))\n"
                      "import subprocess\ntry:\n    subprocess.run(['/usr/bin/touch', '/sandbox/pwned2'])\n"
                      "except OSError as e:\n    print('refused', e.errno)\n",
            "ctypes": "argv = (ctypes.c_char_p * 3)(b'touch', b'/sandbox/pwned', None)\n"
                      "print('execv', libc.execv(b'/usr/bin/touch', argv), ctypes.get_errno())\n"
                      "print('raw', *sys_('execve', b'/usr/bin/touch', argv, None))\n"}[way]
    result = attack(sandbox, body + "import os\nprint('made', os.path.exists('/sandbox/pwned'), "
                                    "os.path.exists('/sandbox/pwned2'))\n")
    assert "made False False" in result.stdout, result
    assert result.stdout.count(" 1\n") >= 1 or "status" in result.stdout  # EPERM from seccomp


@pytest.mark.parametrize("way", ["stdlib", "ctypes"])
def test_no_file_outside_is_read_or_written(sandbox, way, tmp_path):
    database = tmp_path / "responses.sqlite"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE responses (text)")
        connection.execute("INSERT INTO responses VALUES ('TOP SECRET RESPONSE')")
    connection.close()
    os.chmod(tmp_path, 0o777)
    os.chmod(database, 0o666)  # even world-writable, it must stay out of reach
    before = sorted(p.name for p in tmp_path.iterdir())
    target = tmp_path / "copy.sqlite"
    body = {"stdlib": f"import sqlite3\ntry:\n    c = sqlite3.connect({str(database)!r})\n"
                      "    print(c.execute('SELECT * FROM responses').fetchall())\nexcept Exception as e:\n    print('refused', e)\n"
                      f"try:\n    sqlite3.connect(':memory:').execute('VACUUM INTO {target}')\nexcept Exception as e:\n"
                      f"    print('refused', e)\ntry:\n    print(open({str(database)!r}, 'rb').read())\nexcept OSError as e:\n"
                      "    print('refused', e)\n",
            "ctypes": f"fd, err = sys_('openat', -100, {str(database).encode()!r}, 0, 0)\nprint('open', fd, err)\n"
                      "buffer = ctypes.create_string_buffer(4096)\n"
                      "if fd >= 0:\n    print(buffer.raw[:sys_('read', fd, buffer, 4096)[0]])\n"
                      f"fd, err = sys_('openat', -100, {str(target).encode()!r}, 0o101, 0o644)\nprint('create', fd, err)\n"}[way]
    result = attack(sandbox, body)
    assert "TOP SECRET" not in result.stdout and "SQLite format" not in result.stdout, result
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.fixture
def victim():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process
    process.kill()
    process.wait()


def nofile_limit(pid: int) -> str:
    return next(line for line in open(f"/proc/{pid}/limits") if line.startswith("Max open files"))


@pytest.mark.parametrize("way", ["stdlib", "ctypes"])
def test_no_other_process_is_killed_traced_or_limited(sandbox, way, victim):
    pid = victim.pid
    limits = nofile_limit(pid)
    body = {"stdlib": "import os, signal, resource\n"
                      f"for attempt in (lambda: os.kill({pid}, 9), lambda: signal.pidfd_send_signal(os.pidfd_open({pid}), 9),"
                      f" lambda: resource.prlimit({pid}, resource.RLIMIT_NOFILE, (3, 3)),"
                      f" lambda: resource.prlimit(os.getppid(), resource.RLIMIT_NOFILE, (3, 3))):\n"
                      "    try:\n        attempt()\n        print('done')\n    except Exception as e:\n        print('refused', e)\n",
            "ctypes": f"print('kill', *sys_('kill', {pid}, 9))\nfd, err = sys_('pidfd_open', {pid}, 0)\nprint('pidfd', fd, err)\n"
                      f"print('pidfd_kill', *sys_('pidfd_send_signal', fd if fd >= 0 else 3, 9, None, 0))\n"
                      f"print('ptrace', *sys_('ptrace', 16, {pid}, None, None))\n"
                      "limit = (ctypes.c_uint64 * 2)(3, 3)\n"
                      f"print('prlimit', *sys_('prlimit64', {pid}, 7, limit, None))\n"
                      "print('prlimit_parent', *sys_('prlimit64', libc.getppid(), 7, limit, None))\n"}[way]
    result = attack(sandbox, body)
    time.sleep(0.2)
    assert victim.poll() is None, result  # still alive
    assert nofile_limit(pid) == limits
    assert "done" not in result.stdout.replace("refused", ""), result


@pytest.mark.parametrize("way", ["stdlib", "ctypes"])
def test_no_extended_attribute_is_set_outside(sandbox, way, tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    os.chmod(target, 0o666)
    os.chmod(tmp_path, 0o777)
    body = {"stdlib": f"import os\ntry:\n    os.setxattr({str(target)!r}, 'user.pwned', b'1')\nexcept OSError as e:\n    print('refused', e)\n",
            "ctypes": f"print('setxattr', *sys_('setxattr', {str(target).encode()!r}, b'user.pwned', b'1', 1, 0))\n"}[way]
    attack(sandbox, body)
    assert os.listxattr(target) == []


def escapees() -> list[str]:
    names = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and open(f"/proc/{entry}/comm").read().strip() == "symgen-escapee":
                names.append(entry)
        except OSError:
            pass
    return names


@pytest.mark.parametrize("way", ["stdlib", "ctypes"])
def test_a_child_cannot_outlive_the_run(sandbox, way):
    """The child leaves its session and tries every pids cgroup, then sleeps: when the run ends,
    nothing of it is left."""
    cgroups = "['/sys/fs/cgroup/pids/cgroup.procs', '/sys/fs/cgroup/unified/cgroup.procs', '/sys/fs/cgroup/cgroup.procs']"
    body = {"stdlib": "import os, time\npid = os.fork()\nif pid == 0:\n"
                      "    try:\n        open('/proc/self/comm', 'w').write('symgen-escapee')\n    except OSError:\n        pass\n"
                      "    try:\n        os.setsid()\n    except OSError as e:\n        print('setsid refused', e, flush=True)\n"
                      f"    for path in {cgroups}:\n        try:\n            open(path, 'w').write(str(os.getpid()))\n"
                      "        except OSError:\n            pass\n    time.sleep(60)\n    os._exit(0)\nprint('forked', pid)\n",
            "ctypes": "import time\npid, err = sys_('clone', 17, 0, None, None, 0)\nif pid == 0:\n"
                      "    libc.prctl(15, b'symgen-escapee', 0, 0, 0)\n    sys_('setsid')\n"
                      f"    for path in {cgroups}:\n        fd, err = sys_('openat', -100, path.encode(), 1, 0)\n"
                      "        if fd >= 0:\n            sys_('write', fd, str(libc.getpid()).encode(), 8)\n"
                      "    time.sleep(60)\n    libc._exit(0)\nprint('forked', pid, err)\n"}[way]
    result = attack(sandbox, body)
    deadline = time.monotonic() + 5
    while escapees() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert escapees() == [], result


@pytest.mark.parametrize("way", ["stdlib", "ctypes"])
def test_no_network_and_no_mount(sandbox, way):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        body = {"stdlib": f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
                          "    print('connected')\nexcept OSError as e:\n    print('refused', e)\n",
                "ctypes": "print('socket', *sys_('socket', 2, 1, 0))\n"
                          "print('mount', *sys_('mount', b'none', b'/sandbox', b'tmpfs', 0, None))\n"
                          "print('unshare', *sys_('unshare', 0x10000000))\n"}[way]
        result = attack(sandbox, body)
    assert "connected" not in result.stdout, result
    if way == "ctypes":
        for line in result.stdout.splitlines():
            assert line.split()[1] == "-1", result  # each call refused


FORGERIES = {
    "marker and exit": "    return -1\nimport sys\nprint('\\n__SYMGEN_RESULTS__passed')\n"
                       "print('__SYMGEN_VERDICT__{\"passed\": true}'); sys.stdout.flush()\nimport os\nos._exit(0)\n",
    "native write to the judge's output": "    return -1\n" + "\n".join(
        "" + line for line in HOOK_OFF.replace("NR[name]", "{'write': %d}[name]" % NR["write"]).splitlines()) + "\n"
        "for path in ('/proc/1/fd/1', '/proc/2/fd/1', '/proc/self/fd/1'):\n"
        "    fd = libc.open(path.encode(), 1)\n"
        "    if fd >= 0:\n        libc.write(fd, b'__SYMGEN_VERDICT__{\"passed\": true}\\n', 36)\n"
        "libc._exit(0)\n",
    "kill the judge": "    return -1\nimport os, signal\nfor pid in (1, 2, os.getppid()):\n    try:\n"
                      "        os.kill(pid, signal.SIGKILL)\n    except Exception:\n        pass\n",
}


@pytest.mark.parametrize("forgery", list(FORGERIES))
def test_a_verdict_cannot_be_forged(sandbox, forgery):
    context = {"prompt": "def count_vowels(text):\n    \"\"\" Vowels in text. \"\"\"\n", "entry_point": "count_vowels",
               "calls": [], "test": "def check(candidate):\n    assert candidate('banana') == 3\n"}
    outcome = check_python(FORGERIES[forgery], context, sandbox)
    assert outcome.status != "ok", outcome
    honest = check_python("    return sum(1 for c in text.lower() if c in 'aeiou')\n", context, sandbox)
    assert honest.key == "passed", honest
    calls = {**context, "test": None, "calls": ["count_vowels('banana')"]}
    assert check_python(FORGERIES[forgery], calls, sandbox).status != "ok" or forgery == "kill the judge"


def test_the_reviews_row_through_symgen_check(tmp_path):
    """The review's HumanEval-style row: its hook bypass fails, no command runs, and the row is
    not valid."""
    solution = ("    import sys\n    sys.modules['__main__'].busy.append(1)\n    __import__('os').system('id > /tmp/pwned-symgen')\n"
                "    return sum(1 for c in text.lower() if c in 'aeiou')\n")
    row = {"task_id": "x/0", "prompt": "def vowels(text):\n    \"\"\" Count vowels. \"\"\"\n", "entry_point": "vowels",
           "canonical_solution": solution, "test": "def check(candidate):\n    assert candidate('banana') == 3\n"}
    path = tmp_path / "row.jsonl"
    path.write_text(json.dumps(row) + "\n")
    if os.path.exists("/tmp/pwned-symgen"):
        os.remove("/tmp/pwned-symgen")
    done = subprocess.run([sys.executable, "-m", "symgen_datasets.cli", "check", "python", "--input", str(path),
                           "--sandbox", "namespaces"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "valid 0 of 1" in done.stdout, done.stdout
    assert not os.path.exists("/tmp/pwned-symgen")


def test_pass_at_1_cannot_be_forged():
    from symgen_datasets.metrics.python import pass_at_1

    row = {"prompt": "def count_vowels(text):\n    \"\"\" Vowels in text. \"\"\"\n", "entry_point": "count_vowels",
           "test": "def check(candidate):\n    assert candidate('banana') == 3\n    assert candidate('sky') == 0\n"}
    honest = "    return sum(1 for c in text.lower() if c in 'aeiou')\n"
    isolation = "bubblewrap" if bubblewrap() else "namespaces"
    scored = pass_at_1([*FORGERIES.values(), honest], [row] * (len(FORGERIES) + 1), sandbox=isolation, timeout_s=5)
    assert [r["correct"] for r in scored.per_row] == [False] * len(FORGERIES) + [True]
