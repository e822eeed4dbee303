"""Checks the Airbyte source's check, discover and read output against the emulator.

Usage: check_airbyte.py <base_url> <key> <check ok> <check bad key> <discover> <read>
"""
import json
import sys
import urllib.request

base, key, check_ok, check_bad, discover, read = sys.argv[1:7]


def messages(path):
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                yield json.loads(line)


def status(path):
    for m in messages(path):
        if m.get("type") == "CONNECTION_STATUS":
            return m["connectionStatus"]["status"]
    return None


def get(path):
    req = urllib.request.Request(base + path)
    req.add_header("x-pendo-integration-key", key)
    with urllib.request.urlopen(req) as resp:
        return json.load(resp)


problems = []
if status(check_ok) != "SUCCEEDED":
    problems.append(f"check with the emulator key: {status(check_ok)}")
if status(check_bad) != "FAILED":
    problems.append(f"check with a wrong key should fail, got {status(check_bad)}")
streams = {s["name"] for m in messages(discover) if m.get("type") == "CATALOG" for s in m["catalog"]["streams"]}
want_streams = {"Page", "Feature", "Report", "Guide", "Account Metadata", "Visitor Metadata"}
if streams != want_streams:
    problems.append(f"discovered {sorted(streams)}, expected {sorted(want_streams)}")

expected = {
    "Page": len(get("/api/v1/page")),
    "Feature": len(get("/api/v1/feature")),
    "Report": len(get("/api/v1/report")),
    "Guide": len(get("/api/v1/guide")),
    "Account Metadata": 1,
    "Visitor Metadata": 1,
}
got = {}
for m in messages(read):
    if m.get("type") == "RECORD":
        got[m["record"]["stream"]] = got.get(m["record"]["stream"], 0) + 1
for stream, want in expected.items():
    n = got.get(stream, 0)
    print(f"{stream:17} expected {want:4}  got {n:4}  {'ok' if n == want else 'MISMATCH'}")
    if n != want:
        problems.append(f"{stream}: expected {want}, read {n}")
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"{sum(got.values())} passed, 0 failed")
