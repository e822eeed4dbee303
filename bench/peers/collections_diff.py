"""Peer: the diff-before-write script. Reads the Accounts with their current Pendo fields through
REST query pages, compares, and sends only the changed Accounts through sObject Collections,
200 per call."""

import sys
import time
from datetime import datetime

import common


def same(a, b):
    if a is None or b is None:
        return a is None and b is None
    if isinstance(b, str):
        try:
            return datetime.fromisoformat(str(a).replace("Z", "+00:00")) == datetime.fromisoformat(b.replace("Z", "+00:00"))
        except ValueError:
            return str(a) == b
    return abs(float(a) - float(b)) < 1e-9


def main(login_url, pendo_url):
    started = time.monotonic()
    sf = common.salesforce(login_url)
    values, sfdc = common.pendo_usage(pendo_url)
    fields = ", ".join(common.FIELDS.values())
    accounts = list(sf.query_all_iter(f"SELECT Id, Pendo_Account_Id__c, {fields} FROM Account"))
    current = {a["Id"]: a for a in accounts}
    matched = common.match(values, sfdc, accounts)
    stamp = common.now()
    changed = []
    for account_id, v in matched.items():
        if all(same(current[account_id].get(k), x) for k, x in v.items()):
            continue
        changed.append({"attributes": {"type": "Account"}, "Id": account_id, common.UPDATED: stamp, **v})
    written = 0
    for i in range(0, len(changed), 200):
        results = sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": False, "records": changed[i : i + 200]})
        failed = [r for r in results if not r.get("success")]
        if failed:
            sys.exit(f"{len(failed)} updates failed: {failed[0]}")
        written += len(results)
    common.report("collections + diff script", written, started)


if __name__ == "__main__":
    main(*sys.argv[1:3])
