"""Peer: the careful Bulk API 2.0 script. One Bulk query for the Accounts, every matched
Account's figures in one Bulk update job, every run (no diff: Bulk makes writing everything
cheap in calls)."""

import csv
import io
import sys
import time

import common


def main(login_url, pendo_url):
    started = time.monotonic()
    sf = common.salesforce(login_url)
    values, sfdc = common.pendo_usage(pendo_url)
    accounts = []
    for chunk in sf.bulk2.Account.query("SELECT Id, Pendo_Account_Id__c FROM Account"):
        accounts.extend(csv.DictReader(io.StringIO(chunk)))
    matched = common.match(values, sfdc, accounts)
    stamp = common.now()
    records = []
    for account_id, v in matched.items():
        row = {"Id": account_id, common.UPDATED: stamp}
        row.update({k: "" if x is None else x for k, x in v.items()})
        records.append(row)
    written = 0
    if records:
        for result in sf.bulk2.Account.update(records=records):
            if result["numberRecordsFailed"]:
                sys.exit(f"{result['numberRecordsFailed']} records failed in job {result['job_id']}")
            written += result["numberRecordsProcessed"]
    common.report("bulk 2.0 script", written, started)


if __name__ == "__main__":
    main(*sys.argv[1:3])
