"""A client of ``migrator serve`` with httpx alone: queue a migration, follow its events.

    MIGRATOR_TOKEN=mgr_... python examples/api_client.py http://127.0.0.1:8080 DOMAIN SRC DST

The request carries an ``Idempotency-Key``, so sending it again after a lost answer queues
nothing more. The events come from ``GET /v1/events?migration=ID`` (Server-Sent Events);
when the connection drops the client reconnects with ``Last-Event-ID`` and misses none.
Exit status: 0 if the migration was confirmed, 1 if it ended otherwise, 2 if it was refused.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Iterator

import httpx

ENDS = {"CONFIRMED", "ROLLED_BACK", "FAILED", "LOST", "IN_DOUBT"}


def queue(client: httpx.Client, domain: str, src: str, dst: str) -> str:
    body = {"domain": domain, "src": src, "dst": dst, "live": True}
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    for attempt in range(3):
        try:
            response = client.post("/v1/migrations", json=body, headers=headers)
            break
        except httpx.TransportError:  # the same key again: never a second migration
            if attempt == 2:
                raise
            time.sleep(1)
    if response.status_code >= 400:
        sys.exit(f"refused ({response.status_code}): {response.json()['detail']}")
    return str(response.json()["id"])


def events(client: httpx.Client, migration_id: str, last_id: str | None) -> Iterator[dict]:
    """The migration's events after ``last_id``, as they commit, each with its ``position``."""
    headers = {"Last-Event-ID": last_id} if last_id else {}
    params = {"migration": migration_id}
    with client.stream("GET", "/v1/events", params=params, headers=headers, timeout=None) as r:
        r.raise_for_status()
        data = None
        for line in r.iter_lines():
            if line.startswith("data:"):
                data = line.removeprefix("data:").strip()
            elif line == "" and data is not None:
                yield json.loads(data)
                data = None


def follow(client: httpx.Client, migration_id: str) -> str:
    """Print each event until the migration ends; its end state."""
    last_id = None
    while True:
        try:
            for event in events(client, migration_id, last_id):
                last_id = str(event["position"])
                step = event["step"] or "-"
                print(
                    f"{event['seq']:>3} {event['at']} {step:<8} {event['kind']:<8} {event['state']}"
                )
                if event["state"] in ENDS and event["kind"] != "intent":
                    return str(event["state"])
        except httpx.TransportError as exc:
            print(f"stream lost ({exc}); resuming after {last_id}", file=sys.stderr)
            time.sleep(1)


def main() -> int:
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    base, domain, src, dst = sys.argv[1:]
    token = os.environ.get("MIGRATOR_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        migration_id = queue(client, domain, src, dst)
        print(f"queued {migration_id}")
        state = follow(client, migration_id)
        reason = client.get(f"/v1/migrations/{migration_id}").json()["reason"]
    print(f"{migration_id}: {state}" + (f" ({reason})" if reason else ""))
    return 0 if state == "CONFIRMED" else 1


if __name__ == "__main__":
    sys.exit(main())
