"""What every peer script shares: the connection to the emulators, the engagement figures read
from Pendo's aggregation API, and the Pendo account → Salesforce Account match.

The scripts are the ones a capable admin would write with simple-salesforce and requests, to
compare usagesync against on the same world (bench/peers.sh). They read the same figures
usagesync's engagement-scores workflow writes, with the same score formula, so each writes the
same fields; they match Pendo accounts to Accounts the way such scripts do (the Salesforce Id
kept in Pendo, else the Pendo id kept on the Account), without usagesync's e-mail-domain rule.
"""

import json
import os
import sys
import time
from datetime import datetime, timezone

import requests
from simple_salesforce import Salesforce

PENDO_KEY = os.environ.get("PENDO_INTEGRATION_KEY", "emulator-integration-key")
CLIENT_ID = "usagesync-emulator"
CLIENT_SECRET = os.environ.get("SF_CLIENT_SECRET", "emulator-secret")
WINDOW_DAYS = 30

# Field → (score weight, target), as the demo's engagement workflow.
SCORE = {
    "active_visitors": (0.3, 25),
    "active_days": (0.3, 20),
    "minutes": (0.1, 600),
    "feature_adoption": (0.2, 1.0),
    "guide_completion": (0.1, 1.0),
}
FIELDS = {
    "active_visitors": "Pendo_Active_Visitors__c",
    "active_days": "Pendo_Active_Days__c",
    "events": "Pendo_Events__c",
    "minutes": "Pendo_Minutes__c",
    "feature_adoption": "Pendo_Feature_Adoption__c",
    "guide_completion": "Pendo_Guide_Completion__c",
    "last_active": "Pendo_Last_Active__c",
    "score": "Pendo_Engagement_Score__c",
}
UPDATED = "Pendo_Engagement_Updated__c"


class LoopbackSession(requests.Session):
    """simple-salesforce always speaks https to the instance; the emulator here speaks plain
    http (usagesync has no option to trust a self-signed certificate), so https to 127.0.0.1 is
    sent as http. Nothing else about the requests changes."""

    def request(self, method, url, *args, **kwargs):
        if url.startswith("https://127.0.0.1"):
            url = "http://" + url[len("https://"):]
        return super().request(method, url, *args, **kwargs)


def session():
    s = LoopbackSession()
    s.trust_env = False  # loopback only: no proxy from the environment
    return s


def salesforce(login_url):
    """A simple-salesforce client logged in with the client-credentials flow."""
    s = session()
    r = s.post(
        f"{login_url}/services/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        timeout=60,
    )
    r.raise_for_status()
    token = r.json()
    return Salesforce(instance_url=token["instance_url"], session_id=token["access_token"], version="60.0", session=s)


def aggregate(pendo_url, pipeline):
    s = session()
    body = {"response": {"mimeType": "application/json"}, "request": {"pipeline": pipeline}}
    r = s.post(
        f"{pendo_url}/api/v1/aggregation",
        headers={"x-pendo-integration-key": PENDO_KEY, "content-type": "application/json"},
        data=json.dumps(body),
        timeout=600,
    )
    r.raise_for_status()
    return r.json()["results"]


def window():
    return {"period": "dayRange", "first": "now()", "count": -WINDOW_DAYS}


def events_source():
    return {"source": {"events": {"appId": 'expandAppIds("*")'}, "timeSeries": window()}}


def pendo_usage(pendo_url):
    """{pendo account id: {figure: value}} and {pendo account id: sfdcaccountid or None}."""
    accounts = aggregate(
        pendo_url,
        [
            {"source": {"accounts": None}},
            {
                "select": {
                    "accountId": "accountId",
                    "lastvisit": "metadata.auto.lastvisit",
                    "sfdc": "metadata.custom.sfdcaccountid",
                }
            },
        ],
    )
    usage = {}
    sfdc = {}
    for a in accounts:
        aid = a.get("accountId")
        if not aid:
            continue
        u = usage.setdefault(aid, dict(visitors=0, days=0, events=0, minutes=0, core=0, seen=0, done=0))
        u["last"] = a.get("lastvisit") or None
        sfdc[aid] = a.get("sfdc") or None
    for row in aggregate(
        pendo_url,
        [
            events_source(),
            {"group": {"group": ["accountId", "day"], "fields": {"events": {"sum": "numEvents"}, "minutes": {"sum": "numMinutes"}}}},
            {
                "group": {
                    "group": ["accountId"],
                    "fields": {"days": {"count": "day"}, "events": {"sum": "events"}, "minutes": {"sum": "minutes"}},
                }
            },
        ],
    ):
        if row.get("accountId") in usage:
            usage[row["accountId"]].update(days=row["days"], events=row["events"], minutes=row["minutes"])
    for row in aggregate(
        pendo_url,
        [
            events_source(),
            {"identified": "visitorId"},
            {"group": {"group": ["accountId", "visitorId"], "fields": {}}},
            {"group": {"group": ["accountId"], "fields": {"visitors": {"count": "visitorId"}}}},
        ],
    ):
        if row.get("accountId") in usage:
            usage[row["accountId"]]["visitors"] = row["visitors"]
    core = [
        f["id"]
        for f in aggregate(pendo_url, [{"source": {"features": {"appId": 'expandAppIds("*")'}}}, {"filter": "isCoreEvent == true"}])
    ]
    if core:
        is_core = " || ".join(f'featureId == "{c}"' for c in core)
        for row in aggregate(
            pendo_url,
            [
                {"source": {"featureEvents": {"appId": 'expandAppIds("*")'}, "timeSeries": window()}},
                {"filter": is_core},
                {"group": {"group": ["accountId", "featureId"], "fields": {}}},
                {"group": {"group": ["accountId"], "fields": {"features": {"count": "featureId"}}}},
            ],
        ):
            if row.get("accountId") in usage:
                usage[row["accountId"]]["core"] = row["features"]
    last_steps = []
    for g in aggregate(pendo_url, [{"source": {"guides": {"appId": 'expandAppIds("*")'}}}]):
        steps = g.get("steps") or []
        if steps:
            last_steps.append(max(enumerate(steps), key=lambda s: (s[1].get("rank", float("-inf")), s[0]))[1]["id"])
    relevant = 'type == "guideSeen"'
    if last_steps:
        relevant += ' || (type == "guideAdvanced" && (' + " || ".join(f'guideStepId == "{s}"' for s in last_steps) + "))"
    for row in aggregate(
        pendo_url,
        [
            {"source": {"guideEvents": {"appId": 'expandAppIds("*")'}, "timeSeries": window()}},
            {"identified": "visitorId"},
            {"filter": relevant},
            {"group": {"group": ["accountId", "visitorId", "guideId", "type"], "fields": {}}},
            {"eval": {"one": "1"}},
            {"group": {"group": ["accountId", "type"], "fields": {"pairs": {"sum": "one"}}}},
        ],
    ):
        u = usage.get(row.get("accountId"))
        if u is not None and row.get("type") == "guideSeen":
            u["seen"] = row["pairs"]
        elif u is not None and row.get("type") == "guideAdvanced":
            u["done"] = row["pairs"]
    values = {}
    for aid, u in usage.items():
        ratio = lambda n, d: 0.0 if d == 0 else max(0.0, min(1.0, n / d))  # noqa: E731
        figures = {
            "active_visitors": u["visitors"],
            "active_days": u["days"],
            "events": u["events"],
            "minutes": u["minutes"],
            "feature_adoption": ratio(min(u["core"], len(core)), len(core)),
            "guide_completion": ratio(u["done"], u["seen"]),
        }
        total = sum(w * max(0.0, min(1.0, figures[m] / t)) for m, (w, t) in SCORE.items())
        figures["score"] = round(100.0 * total / sum(w for w, _ in SCORE.values()), 1)
        last = u.get("last")
        figures["last_active"] = (
            datetime.fromtimestamp(last / 1000, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            if last
            else None
        )
        values[aid] = {FIELDS[k]: v for k, v in figures.items()}
    return values, sfdc


def match(values, sfdc, accounts):
    """{Salesforce Account Id: values}: the Id kept in Pendo when that Account exists, else the
    Account that keeps the Pendo id."""
    by_id = {a["Id"]: a for a in accounts}
    by_pendo = {a["Pendo_Account_Id__c"]: a for a in accounts if a.get("Pendo_Account_Id__c")}
    out = {}
    for aid, v in values.items():
        a = by_id.get(sfdc.get(aid) or "") or by_pendo.get(aid)
        if a is not None:
            out[a["Id"]] = v
    return out


def now():
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def report(name, written, started):
    """The one line bench/peers.sh reads: records written and seconds."""
    print(json.dumps({"contender": name, "written": written, "seconds": round(time.monotonic() - started, 2)}))
    sys.stdout.flush()
