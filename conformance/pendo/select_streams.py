"""Marks the given streams (and all their fields) selected in a discovered catalog."""
import json
import sys

catalog_path, out_path, *streams = sys.argv[1:]
with open(catalog_path) as f:
    catalog = json.load(f)
found = set()
for stream in catalog["streams"]:
    if stream["tap_stream_id"] not in streams:
        continue
    found.add(stream["tap_stream_id"])
    for entry in stream["metadata"]:
        if entry["breadcrumb"] == []:
            entry["metadata"]["selected"] = True
        elif entry["metadata"].get("inclusion") != "unsupported":
            entry["metadata"]["selected"] = True
missing = set(streams) - found
if missing:
    sys.exit(f"streams not discovered: {sorted(missing)}")
with open(out_path, "w") as f:
    json.dump(catalog, f)
