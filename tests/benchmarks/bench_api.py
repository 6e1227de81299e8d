"""The HTTP API under load, on loopback (on demand; bounded in time).

    python -m tests.benchmarks.bench_api [--migrations N] [--pollers P] [--subscribers S]
        [--workers W] [--backend postgresql|sqlite]

A real ``migrator serve`` and W ``migrator worker`` processes on one journal (a fresh
PostgreSQL schema by default). N migrations of ``test:///`` hosts are queued through
``POST /v1/migrations``; while the workers drive them, P clients poll ``GET
/v1/migrations/{id}`` (a random one of those queued, each as soon as the last answered)
and S clients follow ``GET /v1/events`` from the first event. Reported: the GETs' count
and p50/p95/max latency as the clients saw them, the POSTs', the time to drive all; and
whether every subscriber received every event of every migration once, in the journal's
position order (compared with ``Journal.events_after`` at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from migrator.drivers.test import TestDriver
from migrator.journal.store import Journal
from migrator.states import TERMINAL
from tests.benchmarks.common import backend
from tests.service.server import Server

ROOT = Path(__file__).resolve().parents[2]
ENDS = {s.value for s in TERMINAL}
BOUND = 150.0
"""Seconds the whole run may take before it gives up."""


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(fraction * len(ordered) + 0.5) - 1)] if ordered else float("nan")


def summary(values: list[float]) -> dict[str, float]:
    return {
        "count": len(values),
        "p50_ms": percentile(values, 0.5) * 1000,
        "p95_ms": percentile(values, 0.95) * 1000,
        "max_ms": max(values, default=float("nan")) * 1000,
    }


async def queue(
    client: httpx.AsyncClient, hosts: list[tuple[str, str, str]]
) -> tuple[list[str], list[float]]:
    ids: list[str] = []
    took: list[float] = []
    for domain, src, dst in hosts:
        start = time.perf_counter()
        made = await client.post("/v1/migrations", json={"domain": domain, "src": src, "dst": dst})
        took.append(time.perf_counter() - start)
        made.raise_for_status()
        ids.append(made.json()["id"])
    return ids, took


async def poller(
    client: httpx.AsyncClient, ids: list[str], done: asyncio.Event, took: list[float]
) -> None:
    while not done.is_set():
        start = time.perf_counter()
        got = await client.get(f"/v1/migrations/{random.choice(ids)}")
        took.append(time.perf_counter() - start)
        got.raise_for_status()


async def subscriber(base: str, seen: list[tuple[int, str, int]], enough: asyncio.Event) -> None:
    async with (
        httpx.AsyncClient(base_url=base, timeout=None) as client,
        client.stream("GET", "/v1/events") as r,
    ):
        data = event_id = None
        async for line in r.aiter_lines():
            if line.startswith("id:"):
                event_id = int(line[3:])
            elif line.startswith("data:"):
                data = json.loads(line[5:])
            elif line == "" and data is not None:
                seen.append((event_id or 0, data["migration_id"], data["seq"]))
                data = None
                if enough.is_set():
                    return


async def all_ended(client: httpx.AsyncClient, ids: list[str]) -> bool:
    page = await client.get("/v1/stats")
    return page.json()["in_flight"] == 0 and page.json()["outcomes"].get("QUEUED", 0) == 0


async def load(base: str, hosts: list[tuple[str, str, str]], pollers: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=pollers + 10)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        started = time.perf_counter()
        ids, posts = await queue(client, hosts)
        done = asyncio.Event()
        gets: list[float] = []
        polling = [asyncio.create_task(poller(client, ids, done, gets)) for _ in range(pollers)]
        while not await all_ended(client, ids):
            if time.perf_counter() - started > BOUND:
                raise TimeoutError("the migrations did not all end in time")
            await asyncio.sleep(0.5)
        driven = time.perf_counter() - started
        done.set()
        await asyncio.gather(*polling)
        return {"ids": ids, "posts": posts, "gets": gets, "driven_s": driven}


def subscribe(base: str, count: int, expected: Any, out: Any) -> None:
    """In a process of its own (so that the pollers' latency is not the subscribers' CPU):
    ``count`` subscribers from the first event, until each has ``expected`` events."""

    async def all_of_them() -> list[list[tuple[int, str, int]]]:
        enough = asyncio.Event()
        streams: list[list[tuple[int, str, int]]] = [[] for _ in range(count)]
        readers = [asyncio.create_task(subscriber(base, s, enough)) for s in streams]
        deadline = time.perf_counter() + BOUND + 30
        while time.perf_counter() < deadline:
            wanted = expected.value
            if wanted > 0 and all(len(s) >= wanted for s in streams):
                break
            await asyncio.sleep(0.1)
        enough.set()
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        return streams

    out.put(asyncio.run(all_of_them()))


def run(args: argparse.Namespace) -> dict[str, Any]:
    with backend(args.backend) as where:
        url = where.journal_url("api")
        Journal.open(url, upgrade=True).close()
        src = TestDriver(f"test://{where.tmp / 'host-a'}")
        dst = TestDriver(f"test://{where.tmp / 'host-b'}")
        hosts = []
        for n in range(args.migrations):
            src.define(f"vm{n}", memory_mib=1)
            hosts.append((f"vm{n}", src.uri, dst.uri))
        server = Server(url).start()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "migrator", "--db", url, "worker", "--concurrency", "8",
                 "--poll", "0.05", "--quiet"], env=env, stderr=subprocess.DEVNULL,
            )
            for _ in range(args.workers)
        ]  # fmt: skip
        expected = multiprocessing.Value("l", 0)
        out: Any = multiprocessing.Queue()
        streaming = multiprocessing.Process(
            target=subscribe, args=(server.base, args.subscribers, expected, out)
        )
        streaming.start()
        try:
            result = asyncio.run(load(server.base, hosts, args.pollers))
            with Journal.open(url) as journal:
                order = [(e.position, e.event.migration_id, e.event.seq)
                         for e in journal.events_after(None, 10_000_000)]  # fmt: skip
            expected.value = len(order)
            result["streams"] = out.get(timeout=60)
            streaming.join(30)
            result["order"] = order
        finally:
            streaming.kill()
            for w in workers:
                w.send_signal(signal.SIGTERM)
            for w in workers:
                w.wait(60)
            server.kill()
    order = result["order"]
    exact = sum(1 for s in result["streams"] if s == order)
    return {
        "backend": args.backend,
        "migrations": args.migrations,
        "pollers": args.pollers,
        "subscribers": args.subscribers,
        "workers": args.workers,
        "driven_s": round(result["driven_s"], 2),
        "get": summary(result["gets"]),
        "post": summary(result["posts"]),
        "events": len(order),
        "subscribers_exact": exact,
        "every_migration_seen": all(
            {m for _, m, _ in s} == set(result["ids"]) for s in result["streams"]
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--migrations", type=int, default=200)
    parser.add_argument("--pollers", type=int, default=50)
    parser.add_argument("--subscribers", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backend", choices=["postgresql", "sqlite"], default="postgresql")
    report = run(parser.parse_args())
    print(json.dumps(report, indent=2))
    if report["subscribers_exact"] != report["subscribers"]:
        sys.exit("a subscriber did not receive every event once, in order")


if __name__ == "__main__":
    main()
