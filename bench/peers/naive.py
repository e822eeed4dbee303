"""Peer: the obvious script. Reads the Accounts, then one update call per matched Account,
every run."""

import sys
import time

import common


def main(login_url, pendo_url):
    started = time.monotonic()
    sf = common.salesforce(login_url)
    values, sfdc = common.pendo_usage(pendo_url)
    accounts = list(sf.query_all_iter("SELECT Id, Pendo_Account_Id__c FROM Account"))
    matched = common.match(values, sfdc, accounts)
    stamp = common.now()
    written = 0
    for account_id, v in matched.items():
        sf.Account.update(account_id, {**v, common.UPDATED: stamp})
        written += 1
    common.report("one update per account", written, started)


if __name__ == "__main__":
    main(*sys.argv[1:3])
