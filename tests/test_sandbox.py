"""The Python sandbox: hostile programs are contained, with bubblewrap where it works and with the
launcher's own namespaces without it (with rlimits, seccomp, pids cgroup, the audit hook, an empty
environment and a folder of its own in both); hostile candidates cost only themselves in the
Python verifier. Attacks with the audit hook switched off are in test_sandbox_attacks.py."""

from __future__ import annotations

import os
import socket
import time

import pytest

from symgen_datasets.verifiers.python import PythonVerifier, check_python
from symgen_datasets.verifiers.sandbox import Sandbox, bubblewrap

ISOLATIONS = ["namespaces"] + (["bubblewrap"] if bubblewrap() else [])


@pytest.fixture(params=ISOLATIONS)
def sandbox(request):
    return Sandbox(timeout_s=2.0, isolation=request.param)


def children_of_this_process() -> int:
    return sum(len(open(f"/proc/self/task/{task}/children").read().split()) for task in os.listdir("/proc/self/task"))


def test_a_program_runs_and_prints(sandbox):
    result = sandbox.run("import math, json\nprint(json.dumps([math.factorial(5), sorted({3, 1, 2})]))")
    assert (result.status, result.stdout.strip()) == ("ok", "[120, [1, 2, 3]]")


def test_an_infinite_loop_is_stopped_at_its_limit(sandbox):
    start = time.monotonic()
    result = sandbox.run("while True:\n    pass")
    assert result.status == "timeout" and time.monotonic() - start < sandbox.timeout_s + 3


def test_a_fork_bomb_is_contained(sandbox):
    before = children_of_this_process()
    for program in ("import os\nwhile True:\n    os.fork()",
                    "import subprocess\nsubprocess.run(['sh', '-c', ':(){ :|:& };:'])",
                    "import multiprocessing\nmultiprocessing.Process(target=print).start()"):
        result = sandbox.run(program)
        assert result.status == "error" and "not allowed" in result.stderr, (program, result)
    assert children_of_this_process() == before


def test_a_huge_allocation_fails_inside(sandbox):
    result = sandbox.run("x = bytearray(8 * 1024**3)\nprint('allocated')")
    assert result.status == "error" and "MemoryError" in result.stderr and "allocated" not in result.stdout


def test_writes_outside_the_sandbox_folder_are_refused(sandbox, tmp_path):
    target = tmp_path / "pwned.txt"
    for program in (f"open({str(target)!r}, 'w').write('x')", f"import os\nos.mkdir({str(tmp_path / 'd')!r})",
                    f"import pathlib\npathlib.Path({str(target)!r}).touch()"):
        result = sandbox.run(program)
        assert result.status == "error" and "not allowed" in result.stderr, (program, result)
    assert list(tmp_path.iterdir()) == []
    inside = sandbox.run("open('scratch.txt', 'w').write('ok')\nprint(open('scratch.txt').read())")
    assert inside.status == "ok" and inside.stdout.strip() == "ok"  # its own folder is fine


def test_reads_outside_the_sandbox_folder_are_refused(sandbox, tmp_path, monkeypatch):
    monkeypatch.setenv("SYMGEN_TEST_TOKEN", "hf_TOP SECRET")
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    for program in (f"print(open({str(secret)!r}).read())", "print(open('/etc/hostname').read())",
                    f"import os\nprint(os.listdir({str(tmp_path)!r}))", "import os\nprint(dict(os.environ))"):
        result = sandbox.run(program)
        assert "TOP SECRET" not in result.stdout and "secret.txt" not in result.stdout, (program, result)
    environment = set(eval(sandbox.run("import os\nprint(sorted(os.environ))").stdout))
    assert environment <= {"LC_CTYPE", "PWD"}  # nothing from here (Python sets LC_CTYPE, PEP 538; bubblewrap PWD)


def test_the_network_is_out_of_reach(sandbox):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        result = sandbox.run(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\nprint('connected')")
    assert result.status == "error" and "connected" not in result.stdout


def test_output_is_capped(sandbox):
    result = sandbox.run("print('x' * (5 * 1024**2))")
    assert result.status == "error" and len(result.stdout) <= 1024**2


def test_hostile_candidates_cost_only_themselves_in_the_verifier(tmp_path):
    context = {"prompt": "def add(a, b):\n    \"\"\" Add two numbers. \"\"\"\n", "entry_point": "add",
               "calls": ["add(1, 2)", "add(-1, 5)"], "test": None}
    candidates = ["    return a + b\n", "    while True:\n        pass\n", "    import os\n    os.fork()\n",
                  "    return a - b\n", "    return a + b  # the same\n", "    pass\n"]
    with PythonVerifier(timeout_s=3.0) as verifier:
        outcomes = verifier.execute(context, candidates)
    assert [o.status for o in outcomes] == ["ok", "error", "error", "ok", "ok", "error"]
    assert "TimeoutError" in outcomes[1].error  # each call of the endless candidate was stopped at its 1 s limit
    assert "PermissionError" in outcomes[2].error  # the fork was refused in every call
    assert outcomes[0].key == outcomes[4].key != outcomes[3].key
    assert "None" in outcomes[5].error  # `pass` returns nothing: not a vote


def test_no_isolation_is_refused_unless_the_risk_is_accepted(monkeypatch):
    from symgen_datasets.verifiers import sandbox as module
    from symgen_datasets.errors import InputError

    monkeypatch.setattr(module, "bubblewrap", lambda: None)
    monkeypatch.setattr(module, "namespaces", lambda: False)
    with pytest.raises(InputError, match="none-i-accept-the-risk") as refused:
        Sandbox(timeout_s=2.0)
    assert "apt-get install bubblewrap" in str(refused.value)
    unsafe = Sandbox(timeout_s=2.0, isolation="none-i-accept-the-risk")
    assert unsafe.describe().startswith("NO ISOLATION")
    assert unsafe.run("print(6 * 7)").stdout.strip() == "42"


def test_a_problem_with_its_own_test_is_checked_by_it():
    context = {"prompt": "def double(x):\n    \"\"\" Twice x. \"\"\"\n", "entry_point": "double", "calls": [],
               "test": "def check(candidate):\n    assert candidate(2) == 4\n"}
    sandbox = Sandbox(timeout_s=2.0)
    assert check_python("    return 2 * x\n", context, sandbox).key == "passed"
    assert check_python("    return x + 1\n", context, sandbox).status == "error"
