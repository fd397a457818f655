"""The repository itself: no run output is tracked (a fresh clone carries none, and running the
README's commands leaves `git status` clean; .ci/run checks the latter)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(not (ROOT / ".git").exists() or not shutil.which("git"), reason="not a git checkout")
def test_no_work_folder_or_response_cache_is_tracked():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.splitlines()
    run_output = [path for path in tracked if re.search(r"(^|/)\.[^/]*\.work/", path) or path.endswith("responses.sqlite")]
    assert tracked and run_output == []
