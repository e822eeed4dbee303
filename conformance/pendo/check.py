"""Compares tap-pendo's output with what the emulator holds.

Usage: check.py <base_url> <key> <start_ms> <tap output file> <discovered catalog>
Exits non-zero with a report on any mismatch.
"""
import json
import sys
import urllib.request

base, key, start_ms, out_path, catalog_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]


def call(path, body=None):
    req = urllib.request.Request(base + path, method="POST" if body is not None else "GET")
    req.add_header("x-pendo-integration-key", key)
    req.add_header("content-type", "application/json")
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(req, data=data) as resp:
        return json.load(resp)


def count(pipeline):
    out = call("/api/v1/aggregation", {"response": {"mimeType": "application/json"},
                                       "request": {"pipeline": pipeline + [{"count": None}]}})
    return out["results"][0]["count"]


window = {"period": "dayRange", "first": start_ms, "last": "now()"}
expected = {
    "accounts": count([{"source": {"accounts": None}}, {"filter": f"metadata.auto.lastupdated>={start_ms}"}]),
    "visitors": count([{"source": {"visitors": {"identified": True}}}, {"filter": f"metadata.auto.lastupdated>={start_ms}"}]),
    "features": count([{"source": {"features": None}}, {"filter": f"lastUpdatedAt>={start_ms}"}]),
    "guides": count([{"source": {"guides": None}}, {"filter": f"lastUpdatedAt>={start_ms}"}]),
    "events": count([{"source": {"events": None, "timeSeries": window}}]),
    "poll_events": count([{"source": {"pollEvents": None, "timeSeries": window}}]),
}

identity = {"accounts": ("account_id",), "visitors": ("visitor_id",), "features": ("id",), "guides": ("id",),
            "events": ("visitor_id", "account_id", "day", "page_id"),
            "poll_events": ("visitor_id", "poll_id", "browser_time")}
seen = {}
records, schemas = {}, set()
keys = {"accounts": "lastupdated", "visitors": "lastupdated", "features": "last_updated_at",
        "guides": "last_updated_at", "events": "day", "poll_events": "browser_time"}
problems = []
with open(out_path) as f:
    for line in f:
        line = line.strip()
        if not line:
            continue
        msg = json.loads(line)
        if msg.get("type") == "SCHEMA":
            schemas.add(msg["stream"])
        elif msg.get("type") == "RECORD":
            stream = msg["stream"]
            records[stream] = records.get(stream, 0) + 1
            rec = msg["record"]
            if stream in identity:
                ident = tuple(json.dumps(rec.get(k)) for k in identity[stream])
                if ident in seen.setdefault(stream, set()):
                    problems.append(f"{stream}: duplicate record {ident}")
                seen[stream].add(ident)
            if stream in keys and not rec.get(keys[stream]):
                problems.append(f"{stream}: record without {keys[stream]}: {json.dumps(rec)[:200]}")

with open(catalog_path) as f:
    catalog = json.load(f)
account_stream = next(s for s in catalog["streams"] if s["tap_stream_id"] == "accounts")
custom = account_stream["schema"]["properties"].get("metadata_custom", {}).get("properties", {})
if "sfdcaccountid" not in custom:
    problems.append("discovery did not pick up the custom account field sfdcaccountid")

for stream, want in expected.items():
    got = records.get(stream, 0)
    status = "ok" if got == want else "MISMATCH"
    print(f"{stream:12} expected {want:6}  got {got:6}  {status}")
    if got != want:
        problems.append(f"{stream}: expected {want} records, tap wrote {got}")
    if want == 0:
        problems.append(f"{stream}: the emulator holds no rows, so the check proves nothing")

usage = call("/__emulator/usage")
print("emulator calls:", json.dumps(usage["byEndpoint"], sort_keys=True))
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"{sum(records.values())} passed, 0 failed")
