"""simple-salesforce 1.12.10 ``bulk2`` (unmodified) against the emulator's Bulk API 2.0.

Collected by pytest as ``*_test.py`` next to the suite's conftest.py, which provides the ``sf``
(direct mode over https), ``admin`` and fresh-org fixtures; run through ../run.sh. A failure
here is an emulator bug.
"""

import csv
import io

import pytest
from simple_salesforce.exceptions import SalesforceOperationError

WAIT = 0.1  # seconds simple-salesforce sleeps before its first poll


def rows(text):
    return list(csv.DictReader(io.StringIO(text)))


def test_upsert_with_failed_rows(sf, admin):
    admin.seed("Account", [{"Name": "Old", "Pendo_Account_Id__c": "ss-1"}])
    records = [
        {"Pendo_Account_Id__c": "ss-1", "Name": "Renamed", "Pendo_Events__c": "3"},
        {"Pendo_Account_Id__c": "ss-2", "Name": 'New, "quoted"\nline', "Pendo_Events__c": ""},
        {"Pendo_Account_Id__c": "ss-3", "Name": "", "Pendo_Events__c": "1"},
        {"Pendo_Account_Id__c": "ss-4", "Name": "Bad number", "Pendo_Events__c": "lots"},
    ]
    results = sf.bulk2.Account.upsert(records=records, external_id_field="Pendo_Account_Id__c", wait=WAIT)
    assert len(results) == 1
    result = results[0]
    assert result["numberRecordsProcessed"] == 4
    assert result["numberRecordsFailed"] == 2
    assert result["numberRecordsTotal"] == 4
    job_id = result["job_id"]
    assert job_id.startswith("750")

    ok = rows(sf.bulk2.Account.get_successful_records(job_id))
    assert sorted(r["Pendo_Account_Id__c"] for r in ok) == ["ss-1", "ss-2"]
    created = {r["Pendo_Account_Id__c"]: r["sf__Created"] for r in ok}
    assert created == {"ss-1": "false", "ss-2": "true"}
    assert all(r["sf__Id"].startswith("001") for r in ok)

    failed = rows(sf.bulk2.Account.get_failed_records(job_id))
    by_key = {r["Pendo_Account_Id__c"]: r for r in failed}
    assert set(by_key) == {"ss-3", "ss-4"}
    assert by_key["ss-3"]["sf__Error"] == "REQUIRED_FIELD_MISSING:Required fields are missing: [Name]:Name --"
    assert by_key["ss-3"]["sf__Id"] == ""
    assert by_key["ss-4"]["sf__Error"].startswith("JSON_PARSER_ERROR:")

    # simple-salesforce asks for unprocessedRecords with a capital R.
    unprocessed = sf.bulk2.Account.get_unprocessed_records(job_id)
    # The header only (simple-salesforce orders the columns itself).
    assert sorted(unprocessed.splitlines()[0].replace('"', "").split(",")) == ["Name", "Pendo_Account_Id__c", "Pendo_Events__c"]
    assert len(unprocessed.splitlines()) == 1

    stored = {r["Pendo_Account_Id__c"]: r for r in admin.dump("Account")}
    assert stored["ss-1"]["Name"] == "Renamed"
    assert stored["ss-2"]["Name"] == 'New, "quoted"\nline'


def test_insert_update_delete(sf, admin):
    inserted = sf.bulk2.Contact.insert(records=[{"LastName": f"L{i}", "Title": "t"} for i in range(3)], wait=WAIT)
    assert inserted[0]["numberRecordsFailed"] == 0
    ids = [r["sf__Id"] for r in rows(sf.bulk2.Contact.get_successful_records(inserted[0]["job_id"]))]
    assert len(ids) == 3
    # Empty keeps a value; simple-salesforce users null a field with #N/A.
    updated = sf.bulk2.Contact.update(records=[{"Id": ids[0], "Title": "#N/A"}, {"Id": ids[1], "Title": ""}], wait=WAIT)
    assert updated[0]["numberRecordsFailed"] == 0
    stored = {r["Id"]: r for r in admin.dump("Contact")}
    assert stored[ids[0]]["Title"] is None
    assert stored[ids[1]]["Title"] == "t"
    deleted = sf.bulk2.Contact.delete(records=[{"Id": i} for i in ids], wait=WAIT)
    assert deleted[0]["numberRecordsProcessed"] == 3
    assert deleted[0]["numberRecordsFailed"] == 0


def test_failed_job_raises_with_the_error_message(sf):
    with pytest.raises(SalesforceOperationError, match="Field name not found : Nope__c"):
        sf.bulk2.Account.insert(records=[{"Name": "A", "Nope__c": "1"}], wait=WAIT)


def test_query_pages_with_locator(sf, admin):
    admin.seed("Account", [{"Name": f"Q{i:02d}", "Pendo_Events__c": i} for i in range(25)])
    pages = list(sf.bulk2.Account.query("SELECT Name, Pendo_Events__c FROM Account ORDER BY Name", max_records=10, wait=WAIT))
    assert len(pages) == 3
    got = [r for page in pages for r in rows(page)]
    assert [r["Name"] for r in got] == [f"Q{i:02d}" for i in range(25)]
    assert got[3]["Pendo_Events__c"] == "3.0" or got[3]["Pendo_Events__c"] == "3"


def test_query_all_sees_deleted_rows(sf, admin):
    ids = admin.seed("Account", [{"Name": "Gone"}])["ids"]
    sf.Account.delete(ids[0])
    live = [r for page in sf.bulk2.Account.query("SELECT Id FROM Account", wait=WAIT) for r in rows(page)]
    assert live == []
    every = [r for page in sf.bulk2.Account.query_all("SELECT Id, IsDeleted FROM Account", wait=WAIT) for r in rows(page)]
    assert [(r["Id"], r["IsDeleted"]) for r in every] == [(ids[0], "true")]
