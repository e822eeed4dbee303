"""Changes 1% of the world's usage, as bench engagement does: for every 100th Pendo account, 777
page events yesterday by its first visitor, through the Pendo emulator's admin API."""

import json
import sys
import time

import common


def main(pendo_url):
    visitors = common.aggregate(
        pendo_url,
        [{"source": {"visitors": None}}, {"select": {"visitorId": "visitorId", "accountId": "metadata.auto.accountid"}}],
    )
    first = {}
    for v in visitors:
        if v.get("accountId") and not v["visitorId"].startswith("_PENDO_T_"):
            first.setdefault(v["accountId"], v["visitorId"])
    page = common.aggregate(pendo_url, [{"source": {"pages": {"appId": 'expandAppIds("*")'}}}])[0]["id"]
    yesterday = int(time.time() * 1000) - 25 * 3_600_000
    events = [
        {"kind": "page", "id": page, "visitorId": first[a], "accountId": a, "time": yesterday, "numEvents": 777, "numMinutes": 77}
        for a in sorted(first)[::100]
    ]
    r = common.session().post(f"{pendo_url}/__emulator/seed", data=json.dumps({"events": events}),
                              headers={"content-type": "application/json"}, timeout=600)
    r.raise_for_status()
    print(f"changed {len(events)} accounts", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1])
