"""Generation client throughput against a loopback TGI-protocol server.

The server answers every request after a fixed latency L and serves at most C requests at once
(the others wait), so its capacity is C / L requests per second. Measured in one run:

* the client alone: ``TGIGenerator`` (aiohttp) with ``concurrency=C`` driven by ``sample_many``,
  all requests submitted at once;
* the whole answer-generation stage of ``symgen generate --questions`` (batched ``Dataset.map``,
  caching on), K=20 samples per question.

Printed: achieved request rate / (C / L) and the client's CPU time per request.
Target: >= 95% of C / L at C = 64 for the client.

Usage: python benchmarks/generation_client.py [--capacity 64] [--latency 0.5] [--requests 1280]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from symgen_datasets.generators import EventLoopThread, SamplingParams, from_spec, sample_many  # noqa: E402
from symgen_datasets.pipeline import GenerateSettings, generate  # noqa: E402
from symgen_datasets.tasks import get_task  # noqa: E402
from tests.llm_servers import LLMServer  # noqa: E402


def answer(prompt, parameters, seed):
    return "SELECT count(*) FROM state\n\n", [-0.1, -0.2]


def serve(latency: float, capacity: int, urls, stop) -> None:
    """Run the server in its own process, so that it does not share the client's interpreter."""
    with LLMServer(answer, latency_s=latency, capacity=capacity) as server:
        urls.put(server.url)
        stop.wait()


class RemoteServer:
    """The loopback server in a child process; ``url`` and ``requests`` (read from its log)."""

    def __init__(self, latency: float, capacity: int):
        context = multiprocessing.get_context("spawn")
        urls, self._stop = context.Queue(), context.Event()
        self._process = context.Process(target=serve, args=(latency, capacity, urls, self._stop), daemon=True)
        self._process.start()
        self.url = urls.get(timeout=120)

    def close(self) -> None:
        self._stop.set()
        self._process.join(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacity", type=int, default=64, help="C: requests the server serves at once")
    parser.add_argument("--latency", type=float, default=0.5, help="L: seconds per request")
    parser.add_argument("--requests", type=int, default=1280)
    args = parser.parse_args()
    capacity = args.capacity / args.latency
    print(f"server: C={args.capacity} concurrent, L={args.latency}s -> capacity {capacity:.0f} requests/s")

    server = RemoteServer(args.latency, args.capacity)
    try:
        loop = EventLoopThread()
        generator = from_spec(f"tgi:{server.url}", concurrency=args.capacity)
        loop.run(generator.check())
        params = SamplingParams(0.8, 20, ("\n\n",))
        requests = [(f"-- Question: q{i}\n", params, list(range(20))) for i in range(args.requests // 20)]
        sent = sum(len(seeds) for _, _, seeds in requests)
        cpu, wall = time.process_time(), time.perf_counter()
        loop.run(sample_many(generator, requests))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        loop.run(generator.aclose())
        loop.close()
        rate = sent / wall
        print(f"client:   {sent} requests in {wall:.2f}s = {rate:.1f} requests/s = {rate / capacity:.1%} of capacity; "
              f"client CPU {1000 * cpu / sent:.2f} ms/request")

        dev = [json.loads(line) for line in get_task("geoquery_sql").references_path().read_text().splitlines()]
        questions = dev[: args.requests // 20]
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "questions.jsonl"
            path.write_text("".join(json.dumps(q) + "\n" for q in questions))
            wall = time.perf_counter()
            result = generate(GenerateSettings(task="geoquery_sql", questions=str(path), generator=f"tgi:{server.url}",
                                               num_samples=20, min_votes=5, concurrency=args.capacity,
                                               work_dir=str(Path(folder) / "work")), write=False)
            wall = time.perf_counter() - wall
            stage = result.counts["candidates_sampled"]
        print(f"pipeline: {stage} requests in {wall:.2f}s (prompts, verification and writing included) = "
              f"{stage / wall:.1f} requests/s = {stage / wall / capacity:.1%} of capacity")
    finally:
        server.close()
    met = rate / capacity >= 0.95
    print(f"target (client >= 95% of C/L): {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
