"""Versioned datasets on a Hub-compatible server on 127.0.0.1: push, versions, load by revision,
streaming, tag refusal, private repos, branches and re-verification.

huggingface_hub and datasets read HF_ENDPOINT when imported, so every Hub client runs in a
subprocess (the real ``symgen`` CLI, or a short Python script) with the loopback endpoint."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
import yaml

from symgen_datasets.cli import main
from symgen_datasets.tasks import get_task
from tests.hub_server import HubServer
from tests.llm_servers import LLMServer

REPO = "symgen/geo-synth"


@pytest.fixture(scope="module")
def folders(tmp_path_factory, request):
    """Two generated GeoQuery-SQL datasets (different seeds and sizes), standing for v1.0.0 and v1.1.0."""
    from tests.llm_servers import OracleResponder

    dev = [json.loads(line) for line in get_task("geoquery_sql").references_path().read_text().splitlines()]
    oracle = OracleResponder({r["question"]: r["query"] for r in dev}, questions=[r["question"] for r in dev[:60]])
    root = tmp_path_factory.mktemp("generated")
    out = {}
    with LLMServer(oracle) as server:
        for name, seed, count in (("first", "1", "6"), ("second", "2", "9")):
            out[name] = root / name
            assert main(["generate", "geoquery_sql", "--generator", f"tgi:{server.url}", "--num-questions", count,
                         "--num-samples", "6", "--min-votes", "2", "--seed", seed, "--output", str(out[name])]) == 0
    return out


@pytest.fixture()
def hub(tmp_path):
    with HubServer() as server:
        server.env = {
            **os.environ,
            "HF_ENDPOINT": server.url,
            "HF_HUB_DISABLE_XET": "1",
            "HF_TOKEN": "hf_test_token_not_secret",
            "HF_HOME": str(tmp_path / "hf-home"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }
        yield server


def symgen(hub, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "symgen_datasets.cli", *args], env=hub.env,
                          capture_output=True, text=True, timeout=600)


def python(hub, code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], env=hub.env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def local_rows(folder: Path, config: str = "default") -> list[dict]:
    return datasets.load_dataset(str(folder), config, split="train").to_list()


LOAD = """
import json, datasets
def rows(config, **kw):
    return datasets.load_dataset({repo!r}, config, split="train", **kw).to_list()
print(json.dumps({{
    "v1": rows("default", revision="v1.0.0"),
    "v1_candidates": rows("candidates", revision="v1.0.0"),
    "v2": rows("default", revision="v1.1.0"),
    "latest": rows("default"),
    "streamed": list(datasets.load_dataset({repo!r}, split="train", streaming=True)),
}}))
"""


def test_push_two_versions_then_load_each_by_revision(hub, folders):
    first = symgen(hub, "push", str(folders["first"]), REPO, "--version", "1.0.0")
    assert first.returncode == 0, first.stderr
    assert "pushed symgen/geo-synth v1.0.0" in first.stdout
    second = symgen(hub, "push", str(folders["second"]), REPO, "--version", "1.1.0", "--commit-message", "more questions")
    assert second.returncode == 0, second.stderr
    assert "(parent v1.0.0)" in second.stdout

    repo = hub.repos[REPO]
    assert hub.commit_count == 2 and set(repo.tags) == {"v1.0.0", "v1.1.0"}  # one commit per version
    assert repo.commits[repo.tags["v1.1.0"]].title == "more questions"
    assert repo.tags["v1.1.0"] == repo.branches["main"]
    head = repo.commits[repo.branches["main"]].files
    assert len([p for p in head if p.startswith("data/")]) == 1  # v1.0.0's parquet was deleted in the same commit
    assert "hf_test_token_not_secret" not in first.stdout + first.stderr + second.stdout + second.stderr

    loaded = json.loads(python(hub, LOAD.format(repo=REPO)))
    assert loaded["v1"] == local_rows(folders["first"]) and loaded["v1_candidates"] == local_rows(folders["first"], "candidates")
    assert loaded["v2"] == local_rows(folders["second"])
    assert loaded["latest"] == loaded["v2"] and loaded["streamed"] == loaded["v2"]
    assert loaded["v1"] != loaded["v2"]

    listing = symgen(hub, "versions", REPO)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split()[:2] == ["version", "commit"]
    assert lines[1].startswith("v1.0.0") and lines[2].startswith("v1.1.0") and " v1.0.0 " in lines[2]
    assert str(len(loaded["v1"])) in lines[1].split() and str(len(loaded["v2"])) in lines[2].split()
    assert "requests" in lines[0] and "tokens billed" in lines[0]  # each version's token bill, from its card
    assert " + " in lines[1] and " + " in lines[2]


def test_an_existing_tag_is_never_moved(hub, folders):
    assert symgen(hub, "push", str(folders["first"]), REPO, "--version", "1.0.0").returncode == 0
    tagged = hub.repos[REPO].tags["v1.0.0"]
    again = symgen(hub, "push", str(folders["second"]), REPO, "--version", "1.0.0")
    assert again.returncode == 2 and "tag v1.0.0 exists already" in again.stderr and "new --version" in again.stderr
    assert hub.repos[REPO].tags["v1.0.0"] == tagged and hub.commit_count == 1
    bad = symgen(hub, "push", str(folders["first"]), REPO, "--version", "1.0")
    assert bad.returncode == 2 and "expected X.Y.Z" in bad.stderr


def test_the_card_has_every_field(hub, folders):
    assert symgen(hub, "push", str(folders["first"]), REPO, "--version", "1.0.0").returncode == 0
    assert symgen(hub, "push", str(folders["second"]), REPO, "--version", "1.1.0").returncode == 0
    repo = hub.repos[REPO]
    card = repo.commits[repo.tags["v1.1.0"]].files["README.md"].decode()
    header = yaml.safe_load(card.split("---")[1])
    assert header["license"] == "apache-2.0" and header["language"] == ["en"]
    assert "text-generation" in header["task_categories"] and header["size_categories"] == ["n<1K"]
    assert header["pretty_name"] and header["source_datasets"] and "synthetic" in header["tags"]
    assert [c["config_name"] for c in header["configs"]] == ["default", "candidates"]
    meta = header["symgen"]
    assert meta["version"] == "1.1.0" and meta["parent_version"] == "v1.0.0"
    assert "settings.seed: 1 -> 2" in meta["changes"] and any(c.startswith("kept rows:") for c in meta["changes"])
    assert meta["generator"]["model"] == "test-llm" and meta["demonstrations"]["count"] == 10
    assert len(meta["prompt_templates"]) == 2 and sum(meta["vote_histogram"].values()) == meta["counts"]["questions"]
    body = card.split("---", 2)[2]
    for text in ('load_dataset("symgen/geo-synth", revision="v1.1.0", split="train")', "symgen verify symgen/geo-synth@v1.1.0",
                 "| model | test-llm |", "| model revision | 0123456789abcdef |", "| minimum votes (V) | 2 |", "| candidates per question (K) | 6 ",
                 "(parent: v1.0.0)", "settings.seed: 1 -> 2", "## Vote histogram", "| questions_kept |",
                 "sha256", "ye-etal-2023-generating"):
        assert text in body, text


def test_private_repository_and_branch(hub, folders):
    pushed = symgen(hub, "push", str(folders["first"]), "symgen/private-synth", "--version", "1.0.0", "--private")
    assert pushed.returncode == 0, pushed.stderr
    assert hub.repos["symgen/private-synth"].private
    anonymous = {k: v for k, v in hub.env.items() if k != "HF_TOKEN"}
    code = "import huggingface_hub as h; h.HfApi(token=False).dataset_info('symgen/private-synth')"
    result = subprocess.run([sys.executable, "-c", code], env=anonymous, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "RepositoryNotFound" in result.stderr

    on_branch = symgen(hub, "push", str(folders["second"]), "symgen/private-synth", "--version", "2.0.0-rc".replace("-rc", ""), "--revision", "dev")
    assert on_branch.returncode == 0, on_branch.stderr
    repo = hub.repos["symgen/private-synth"]
    assert repo.tags["v2.0.0"] == repo.branches["dev"] != repo.branches["main"] == repo.tags["v1.0.0"]


def test_verify_reproduces_the_kept_set_and_catches_tampering(hub, folders, tmp_path):
    assert symgen(hub, "push", str(folders["first"]), REPO, "--version", "1.0.0").returncode == 0
    remote = symgen(hub, "verify", f"{REPO}@v1.0.0")
    assert remote.returncode == 0, remote.stderr
    kept = len(local_rows(folders["first"]))
    assert f"published {kept} rows, re-verification keeps {kept}: identical" in remote.stdout

    tampered = tmp_path / "tampered"
    subprocess.run(["cp", "-r", str(folders["first"]), str(tampered)], check=True)
    [parquet] = (tampered / "data").iterdir()
    table = pq.read_table(parquet)
    queries = table.column("query").to_pylist()
    queries[0] = "SELECT 42"
    pq.write_table(table.set_column(table.schema.get_field_index("query"), "query", [queries]), parquet)
    local = symgen(hub, "verify", str(tampered))
    assert local.returncode == 1 and "1 differences" in local.stdout and "'SELECT 42'" in local.stdout


def test_generate_push_to_hub_picks_the_next_version(hub, folders, oracle, tmp_path):
    assert symgen(hub, "push", str(folders["first"]), REPO, "--version", "1.0.0").returncode == 0
    with LLMServer(oracle) as server:
        result = symgen(hub, "generate", "geoquery_sql", "--generator", f"tgi:{server.url}", "--num-questions", "4",
                        "--num-samples", "4", "--min-votes", "2", "--output", str(tmp_path / "out"), "--push-to-hub", REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pushed symgen/geo-synth v1.1.0 (parent v1.0.0)" in result.stdout
    assert set(hub.repos[REPO].tags) == {"v1.0.0", "v1.1.0"}


def test_unreachable_hub_is_a_clear_error(folders, tmp_path):
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": "x",
           "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run([sys.executable, "-m", "symgen_datasets.cli", "push", str(folders["first"]), REPO, "--version", "1.0.0"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "cannot reach the Hub" in result.stderr and "Traceback" not in result.stderr


def copy_of(folder: Path, tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(folder, target)
    return target


def test_verify_refuses_unreadable_sources_with_a_clear_message(hub, folders, tmp_path):
    """Exit 2 (cannot check), never 1 (differences) or a traceback."""
    corrupted = copy_of(folders["first"], tmp_path, "corrupted")
    [parquet] = (corrupted / "candidates").iterdir()
    data = bytearray(parquet.read_bytes())
    data[100:140] = b"x" * 40
    parquet.write_bytes(bytes(data))
    no_candidates = copy_of(folders["first"], tmp_path, "no-candidates")
    shutil.rmtree(no_candidates / "candidates")
    no_config = copy_of(folders["first"], tmp_path, "no-config")
    card = (no_config / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    header["configs"] = [c for c in header["configs"] if c["config_name"] != "candidates"]
    (no_config / "README.md").write_text("---\n" + yaml.safe_dump(header) + "---" + card.split("---", 2)[2])
    for source, message in ((corrupted, f"{parquet}: cannot read the parquet file"),
                            (no_candidates, f"{no_candidates}: candidates/{parquet.name} is missing (the card names it)"),
                            (no_config, "the card names no 'candidates' config"),
                            ("./missing", "./missing: no such dataset folder"),
                            ("not a repo id!", "neither a dataset folder nor REPO_ID[@REVISION]")):
        result = symgen(hub, "verify", str(source))
        assert result.returncode == 2, (source, result.stderr[-2000:])
        assert message in result.stderr and "Traceback" not in result.stderr, (source, result.stderr[-2000:])


def test_verify_checks_every_stored_candidate_outcome(hub, folders, tmp_path):
    tampered = copy_of(folders["first"], tmp_path, "tampered")
    [parquet] = (tampered / "candidates").iterdir()
    table = pq.read_table(parquet)
    results = table.column("candidate_result").to_pylist()
    question = table.column("question").to_pylist()[0]
    results[0] = ["0" * 64 if key else key for key in results[0]]  # the vote is unchanged: only the stored outcomes lie
    pq.write_table(table.set_column(table.schema.get_field_index("candidate_result"), "candidate_result", [results]), parquet)
    result = symgen(hub, "verify", str(tampered))
    assert result.returncode == 1, result.stderr[-2000:]
    assert f"{question}: " in result.stdout and "candidate outcomes differ" in result.stdout and "published ok 000000000000" in result.stdout


@pytest.mark.parametrize("kind", ["tgi", "openai"])
def test_credentials_are_never_written_pushed_or_printed(kind, hub, oracle, tmp_path):
    out = tmp_path / "out"
    env = {**hub.env, "OPENAI_API_KEY": "sk-KEY_SECRET"}
    with LLMServer(oracle) as server:
        spec = f"{kind}:http://alice:pw_SECRET@{server.url.removeprefix('http://')}/?api_key=QUERY_SECRET"
        generated = subprocess.run(
            [sys.executable, "-m", "symgen_datasets.cli", "generate", "geoquery_sql", "--generator", spec, "--num-questions", "3",
             "--num-samples", "3", "--min-votes", "1", "--output", str(out), "--push-to-hub", REPO],
            env=env, capture_output=True, text=True, timeout=600,
        )
    assert generated.returncode == 0, generated.stderr[-2000:]
    assert server.seen[-1]["query"] == {"api_key": "QUERY_SECRET"}  # the credentials were used
    listing = symgen(hub, "versions", REPO)
    verified = symgen(hub, "verify", f"{REPO}@v1.0.0")
    assert listing.returncode == 0 and verified.returncode == 0, listing.stderr + verified.stderr
    printed = generated.stdout + generated.stderr + listing.stdout + listing.stderr + verified.stdout + verified.stderr
    assert "SECRET" not in printed and "***@" in listing.stdout
    written = [p.read_bytes() for p in [*out.rglob("*"), *(tmp_path / ".out.work").rglob("*")] if p.is_file()]
    pushed = [content for commit in hub.repos[REPO].commits.values() for content in commit.files.values()]
    assert written and pushed and not any(b"SECRET" in content for content in written + pushed)
    assert "api_key=***" in (out / "README.md").read_text()


def test_verify_rederives_a_dataset_made_under_the_former_agreement_rule(tmp_path, capsys):
    """tests/fixtures/spider_synth_v0_1 was made by version 0.1 (columns compared in order, empty
    results agreeing: three of its ten questions kept `SELECT * FROM singer WHERE 0`). Its card
    records no result_key, so re-verification uses that rule and finds the dataset identical; the
    current rule would not keep the same rows."""
    fixture = Path(__file__).parent / "fixtures" / "spider_synth_v0_1"
    assert main(["verify", str(fixture)]) == 0
    assert "published 10 rows, re-verification keeps 10: identical" in capsys.readouterr().out
    current = tmp_path / "current-rule"
    shutil.copytree(fixture, current)
    card = (current / "README.md").read_text()
    card = card.replace("  demonstrations:\n", "  verifier:\n    name: sqlite\n    result_key: columns-unordered\n"
                        "    empty_results: abstain\n  demonstrations:\n", 1)
    (current / "README.md").write_text(card)
    assert main(["verify", str(current)]) == 1
    out = capsys.readouterr().out
    # the empty-result rows are gone, and swapped columns now vote together
    assert "published 10 rows, re-verification keeps 5: 12 differences" in out
    assert "published but not kept by re-verification: [concert_singer] How many singers do we have?" in out
    assert "'SELECT COUNT(*), country FROM singer GROUP BY country' (3 votes), recomputed" in out


def test_an_older_cards_credentials_and_paths_reach_no_card_record_or_hub(hub, folders, tiny, tmp_path):
    """A card written before redaction (or by hand) holds a generator spec with credentials: no
    card, task model record or pushed file repeats them, and no model card names the machine's
    dataset path."""
    old = copy_of(folders["first"], tmp_path, "old-card")
    card = old / "README.md"
    text = card.read_text()
    leaked = "tgi:http://bob:LEAKpw99@host:8080/?api_key=LEAKkey"
    header, rest = text.split("\n---", 1)
    assert "  generator:\n" in header
    header = header.replace("    spec: ", f"    spec: {leaked}\n    former_spec: ", 1)
    card.write_text(header + "\n---" + rest)
    assert "LEAKpw99" in card.read_text()
    model = tmp_path / "model"
    trained = symgen(hub, "train", "--dataset", str(old), "--model", str(tiny["llama"]), "--output-dir", str(model),
                     "--max-steps", "1", "--per-device-train-batch-size", "4", "--eval-limit", "2",
                     "--max-target-length", "16")
    assert trained.returncode == 0, trained.stderr[-3000:]
    pushed = symgen(hub, "push", str(old), REPO, "--version", "1.0.0")
    pushed_model = symgen(hub, "push-model", str(model), "symgen/geo-model", "--version", "1.0.0")
    listing = symgen(hub, "versions", REPO)
    assert pushed.returncode == pushed_model.returncode == listing.returncode == 0, pushed.stderr + pushed_model.stderr
    written = {p.name: p.read_bytes() for p in (model / "README.md", model / "symgen_task_model.json")}
    remote = {f"{repo}:{path}": content for repo in (hub.repos[REPO], hub.models["symgen/geo-model"])
              for commit in repo.commits.values() for path, content in commit.files.items()}
    printed = (trained.stdout + trained.stderr + pushed.stdout + listing.stdout).encode()
    for where, content in {**written, **remote, "printed": printed}.items():
        assert b"LEAK" not in content, where
        assert where == "printed" or str(tmp_path).encode() not in content, where  # printing local paths is fine
    record = json.loads(written["symgen_task_model.json"])["training"]
    assert record["dataset"]["generator"]["spec"] == "tgi:http://***@host:8080/?api_key=***"
    assert record["dataset"]["path"] == "old-card" and record["dataset_source"] == "old-card"


def test_a_hub_dying_during_an_upload_is_a_clear_error(hub, folders):
    hub.kill_on = r"^PUT /lfs-upload/"  # the Hub dies while the parquet file is uploaded
    result = symgen(hub, "push", str(folders["first"]), REPO, "--version", "1.0.0")
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "stopped answering" in result.stderr and "Traceback" not in result.stderr
    assert "v1.0.0" not in (hub.repos.get(REPO).tags if REPO in hub.repos else {})


def test_two_pushes_at_once_never_mix_versions(hub, folders):
    """Two versions pushed at the same moment on top of v1.0.0: each tag's commit holds exactly
    its own folder's data files and names the version it was committed on as its parent; a push
    that lost the race exits 2 and can be repeated."""
    assert symgen(hub, "push", str(folders["first"]), REPO, "--version", "1.0.0").returncode == 0
    hub.delays = {r"^POST /api/datasets/.*/preupload/": 1.0}  # both read the repository before either commits
    pushes = {version: subprocess.Popen([sys.executable, "-m", "symgen_datasets.cli", "push", str(folders[name]), REPO,
                                         "--version", version], env=hub.env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
              for version, name in (("1.1.0", "second"), ("1.2.0", "first"))}
    results = {version: (p.wait(timeout=300), p.stderr.read()) for version, p in pushes.items()}
    hub.delays = {}
    repo = hub.repos[REPO]
    landed = [version for version, (code, _) in results.items() if code == 0]
    assert landed, results
    for version, (code, err) in results.items():
        if code:
            assert code == 2 and "changed during this push" in err and "Traceback" not in err, err[-2000:]
            assert f"v{version}" not in repo.tags
    for version in landed:
        commit = repo.commits[repo.tags[f"v{version}"]]
        folder = folders["second" if version == "1.1.0" else "first"]
        local = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*.parquet")}
        remote = {path: content for path, content in commit.files.items() if path.endswith(".parquet")}
        assert remote == local, version
        parent_tag = next(tag for tag, sha in repo.tags.items() if sha == commit.parent)
        card = yaml.safe_load(commit.files["README.md"].decode().split("---")[1])
        assert card["symgen"]["parent_version"] == parent_tag, (version, parent_tag)
