"""simple-salesforce (unmodified) against the usagesync Salesforce emulator.

Every assertion is about what the real client does with what the emulator answers; a failure
here is an emulator bug. See ../README.md.
"""

import base64
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from simple_salesforce import Salesforce, format_soql
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceMoreThanOneRecord,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from conftest import CLIENT_ID, CLIENT_SECRET, PASSWORD, USERNAME, VERSION, make_session


def uniq(prefix="k"):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def error_codes(exc):
    """The errorCode values of a simple-salesforce exception's decoded body."""
    content = exc.content
    assert isinstance(content, list), f"REST error bodies are JSON arrays, got {content!r}"
    return [e.get("errorCode") for e in content]


# --------------------------------------------------------------------------------------------
# OAuth
# --------------------------------------------------------------------------------------------


def test_password_token_response_shape(token, base_url):
    for key in ("access_token", "instance_url", "id", "token_type", "issued_at", "signature"):
        assert key in token, key
    assert token["token_type"] == "Bearer"
    assert token["instance_url"] == base_url
    assert len(token["issued_at"]) == 13 and token["issued_at"].isdigit()  # milliseconds
    org_id, user_id = token["id"].rstrip("/").split("/")[-2:]
    assert org_id.startswith("00D") and len(org_id) == 18
    assert user_id.startswith("005") and len(user_id) == 18
    assert token.get("refresh_token")


def test_login_password_flow_through_client(login_session, admin):
    session, adapter = login_session
    sf = Salesforce(
        username=USERNAME,
        password=PASSWORD,
        consumer_key=CLIENT_ID,
        consumer_secret=CLIENT_SECRET,
        domain="login",
        version=VERSION,
        session=session,
    )
    method, url, _, body = adapter.seen[0]
    assert (method, url) == ("POST", "https://login.salesforce.com/services/oauth2/token")
    assert "grant_type=password" in body
    assert sf.describe()["sobjects"]
    assert admin.usage()["byKind"].get("auth") == 1


def test_login_jwt_bearer_through_client(login_session, jwt_key_path):
    session, adapter = login_session
    sf = Salesforce(
        username=USERNAME,
        consumer_key=CLIENT_ID,
        privatekey_file=jwt_key_path,
        domain="login",
        version=VERSION,
        session=session,
    )
    assert "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer" in adapter.seen[0][3]
    assert sf.Account.describe()["name"] == "Account"


def test_login_client_credentials_through_client(login_session):
    session, adapter = login_session
    sf = Salesforce(
        consumer_key=CLIENT_ID,
        consumer_secret=CLIENT_SECRET,
        domain="usagesync-emulator.my",
        version=VERSION,
        session=session,
    )
    method, url, headers, body = adapter.seen[0]
    assert url == "https://usagesync-emulator.my.salesforce.com/services/oauth2/token"
    assert headers["Authorization"] == "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    assert body == "grant_type=client_credentials"
    assert sf.limits()["DailyApiRequests"]["Max"] > 0


def test_login_bad_password_raises_authentication_failed(login_session):
    session, _ = login_session
    with pytest.raises(SalesforceAuthenticationFailed) as e:
        Salesforce(
            username=USERNAME,
            password="wrong",
            consumer_key=CLIENT_ID,
            consumer_secret=CLIENT_SECRET,
            domain="login",
            session=session,
        )
    assert e.value.code == "invalid_grant"


# --------------------------------------------------------------------------------------------
# Describe
# --------------------------------------------------------------------------------------------


def test_describe_global(sf):
    d = sf.describe()
    assert d["encoding"] == "UTF-8"
    assert d["maxBatchSize"] == 200
    names = {o["name"] for o in d["sobjects"]}
    assert {"Account", "Contact", "Lead", "User", "Task", "Case", "Opportunity"} <= names


def test_describe_object_and_metadata(sf):
    d = sf.Account.describe()
    assert d["name"] == "Account"
    fields = {f["name"]: f for f in d["fields"]}
    ext = fields["Pendo_Account_Id__c"]
    assert ext["externalId"] is True and ext["unique"] is True and ext["custom"] is True
    assert fields["Id"]["type"] == "id"
    assert fields["Name"]["nillable"] is False
    meta = sf.Account.metadata()
    assert meta["objectDescribe"]["name"] == "Account"
    assert meta["objectDescribe"]["keyPrefix"] == "001"


def test_describe_unknown_object_is_not_found(sf):
    with pytest.raises(SalesforceResourceNotFound) as e:
        sf.Nope__c.describe()
    assert error_codes(e.value) == ["NOT_FOUND"]


# --------------------------------------------------------------------------------------------
# CRUD
# --------------------------------------------------------------------------------------------


def test_create_get_update_delete(sf):
    created = sf.Account.create({"Name": "Acme Conformance", "Website": "https://acme.example"})
    assert created["success"] is True and created["errors"] == []
    acc_id = created["id"]
    assert len(acc_id) == 18 and acc_id.startswith("001")

    rec = sf.Account.get(acc_id)
    assert rec["Id"] == acc_id
    assert rec["Name"] == "Acme Conformance"
    assert rec["attributes"] == {"type": "Account", "url": f"/services/data/v{VERSION}/sobjects/Account/{acc_id}"}

    # A 15-character ID is accepted on input; the API answers with the 18-character one.
    assert sf.Account.get(acc_id[:15])["Id"] == acc_id

    assert sf.Account.update(acc_id, {"Name": "Acme Renamed"}) == 204
    assert sf.Account.get(acc_id)["Name"] == "Acme Renamed"

    contact = sf.Contact.create({"LastName": "Lovelace", "AccountId": acc_id, "Email": "ada@example.com"})
    assert sf.Contact.get(contact["id"])["AccountId"] == acc_id

    assert sf.Account.delete(acc_id) == 204
    with pytest.raises(SalesforceResourceNotFound):
        sf.Account.get(acc_id)


def test_get_with_fields_param(sf):
    acc_id = sf.Account.create({"Name": "Fields", "Website": "https://f.example"})["id"]
    rec = sf.restful(f"sobjects/Account/{acc_id}", params={"fields": "Name,Website"})
    assert set(rec) == {"attributes", "Name", "Website"}


# --------------------------------------------------------------------------------------------
# Upsert and external IDs
# --------------------------------------------------------------------------------------------


def test_upsert_created_then_updated(sf, admin):
    key = uniq("acct")
    resp = sf.Account.upsert(f"Pendo_Account_Id__c/{key}", {"Name": "Upserted"}, raw_response=True)
    assert resp.status_code == 201
    body = resp.json()
    assert body["success"] is True and body["created"] is True
    acc_id = body["id"]

    resp = sf.Account.upsert(f"Pendo_Account_Id__c/{key}", {"Name": "Upserted again"}, raw_response=True)
    assert resp.status_code == 200  # v46.0+: 200 with a body, not 204
    assert resp.json() == {"id": acc_id, "success": True, "errors": [], "created": False}

    assert sf.Account.get(acc_id)["Name"] == "Upserted again"
    # The default (non-raw) form returns the status code.
    assert sf.Account.upsert(f"Pendo_Account_Id__c/{key}", {"Name": "Third"}) == 200
    assert len([r for r in admin.dump("Account") if r.get("Pendo_Account_Id__c") == key]) == 1


def test_upsert_before_v46_answers_204(base_url, cert_path, token):
    old = Salesforce(instance_url=base_url, session_id=token["access_token"], version="45.0",
                     session=make_session(cert_path))
    key = uniq("v45")
    assert old.Account.upsert(f"Pendo_Account_Id__c/{key}", {"Name": "Old"}) == 201
    resp = old.Account.upsert(f"Pendo_Account_Id__c/{key}", {"Name": "Old2"}, raw_response=True)
    assert resp.status_code == 204
    assert resp.content == b""


def test_get_by_custom_id(sf):
    key = f"{uniq('ext')}@example.com"  # quote_plus encodes '@' as %40
    acc_id = sf.Account.create({"Name": "By ext id", "Pendo_Account_Id__c": key})["id"]
    rec = sf.Account.get_by_custom_id("Pendo_Account_Id__c", key)
    assert rec["Id"] == acc_id
    assert rec["Pendo_Account_Id__c"] == key
    with pytest.raises(SalesforceResourceNotFound):
        sf.Account.get_by_custom_id("Pendo_Account_Id__c", "no-such-key")


def test_get_by_custom_id_path_encoding(sf):
    # quote_plus turns '+' into %2B, which the API decodes back to '+'.
    sf.Account.create({"Name": "Plus", "Pendo_Account_Id__c": "a+b/c"})
    assert sf.Account.get_by_custom_id("Pendo_Account_Id__c", "a+b/c")["Name"] == "Plus"
    # ...and a space into '+', which Salesforce reads as a literal plus in a path, so the lookup
    # misses (simple-salesforce issue #801); the emulator must not be kinder than the real API.
    sf.Account.create({"Name": "Space", "Pendo_Account_Id__c": "has space"})
    with pytest.raises(SalesforceResourceNotFound):
        sf.Account.get_by_custom_id("Pendo_Account_Id__c", "has space")


def test_multiple_matches_answer_300(sf, admin):
    admin.add_field("Account", {"name": "Legacy_Key__c", "type": "string", "length": 80,
                                "externalId": True, "unique": False})
    admin.seed("Account", [{"Name": "Dup 1", "Legacy_Key__c": "same"}, {"Name": "Dup 2", "Legacy_Key__c": "same"}])
    with pytest.raises(SalesforceMoreThanOneRecord) as e:
        sf.Account.get_by_custom_id("Legacy_Key__c", "same")
    assert e.value.status == 300
    urls = e.value.content
    assert isinstance(urls, list) and len(urls) == 2 and all(isinstance(u, str) for u in urls)
    assert all(u.startswith(f"/services/data/v{VERSION}/sobjects/Account/001") for u in urls)

    with pytest.raises(SalesforceMoreThanOneRecord):
        sf.Account.upsert("Legacy_Key__c/same", {"Name": "Which one?"})


def test_upsert_unknown_external_id_field_is_not_found(sf):
    with pytest.raises(SalesforceResourceNotFound) as e:
        sf.Account.upsert("Nope__c/1", {"Name": "x"})
    assert error_codes(e.value) == ["NOT_FOUND"]


def test_updated_and_deleted(sf, admin):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    admin.set_clock({"now": now.isoformat()})
    kept = sf.Account.create({"Name": "Replicated"})["id"]
    gone = sf.Account.create({"Name": "Deleted"})["id"]
    sf.Account.delete(gone)
    # getUpdated/getDeleted ignore seconds and never cover the current minute.
    admin.set_clock({"advanceSeconds": 120})
    start, end = now - timedelta(hours=1), now + timedelta(minutes=5)
    updated = sf.Account.updated(start, end)  # formats and percent-encodes the dates itself
    assert kept in updated["ids"] and gone not in updated["ids"]
    assert updated["latestDateCovered"].endswith(":00.000+0000")
    deleted = sf.Account.deleted(start, end)
    assert [d["id"] for d in deleted["deletedRecords"]] == [gone]
    assert "earliestDateAvailable" in deleted and "latestDateCovered" in deleted


def test_entity_is_deleted(sf):
    acc = sf.Account.create({"Name": "Soon gone"})["id"]
    sf.Account.delete(acc)
    with pytest.raises(SalesforceResourceNotFound) as e:
        sf.Account.update(acc, {"Name": "too late"})
    assert error_codes(e.value) == ["ENTITY_IS_DELETED"]


# --------------------------------------------------------------------------------------------
# Query
# --------------------------------------------------------------------------------------------


def seed_accounts(admin, n, tag):
    admin.seed("Account", [{"Name": f"{tag} {i:05d}", "Pendo_Account_Id__c": f"{tag}-{i}"} for i in range(n)])


def test_query_and_query_more_past_2000(sf, admin):
    seed_accounts(admin, 2500, "Bulkseed")
    first = sf.query("SELECT Id, Name FROM Account WHERE Name LIKE 'Bulkseed%'")
    assert first["totalSize"] == 2500
    assert first["done"] is False
    assert len(first["records"]) == 2000
    assert first["nextRecordsUrl"].startswith(f"/services/data/v{VERSION}/query/")
    rest = sf.query_more(first["nextRecordsUrl"], identifier_is_url=True)
    assert rest["done"] is True
    assert len(rest["records"]) == 500
    assert "nextRecordsUrl" not in rest
    ids = {r["Id"] for r in first["records"]} | {r["Id"] for r in rest["records"]}
    assert len(ids) == 2500
    rec = first["records"][0]
    assert rec["attributes"]["type"] == "Account"
    assert set(rec) == {"attributes", "Id", "Name"}


def test_query_more_by_locator_id(sf, admin):
    seed_accounts(admin, 2100, "Loc")
    first = sf.query("SELECT Id FROM Account")
    locator = first["nextRecordsUrl"].rsplit("/", 1)[1]
    rest = sf.query_more(locator)  # GET .../query/{locator}
    assert len(first["records"]) + len(rest["records"]) == 2100


def test_query_all_and_iterator(sf, admin):
    seed_accounts(admin, 2500, "Iter")
    result = sf.query_all("SELECT Id, Name FROM Account WHERE Name LIKE 'Iter%' ORDER BY Name")
    assert result["totalSize"] == 2500
    names = [r["Name"] for r in result["records"]]
    assert names == sorted(names)
    assert len(set(names)) == 2500

    count = sum(1 for _ in sf.query_all_iter("SELECT Id FROM Account WHERE Name LIKE 'Iter%'"))
    assert count == 2500


def test_query_all_includes_deleted(sf):
    keep = sf.Account.create({"Name": "QA keep"})["id"]
    gone = sf.Account.create({"Name": "QA gone"})["id"]
    sf.Account.delete(gone)
    live = sf.query("SELECT Id FROM Account WHERE Name LIKE 'QA %'")
    assert {r["Id"] for r in live["records"]} == {keep}
    everything = sf.query_all("SELECT Id, IsDeleted FROM Account WHERE Name LIKE 'QA %'", include_deleted=True)
    assert {r["Id"]: r["IsDeleted"] for r in everything["records"]} == {keep: False, gone: True}


def test_query_parent_relationship_and_count(sf):
    acc = sf.Account.create({"Name": "Parent Co"})["id"]
    sf.Contact.create({"LastName": "Child", "AccountId": acc})
    res = sf.query("SELECT Id, Account.Name FROM Contact WHERE AccountId = '%s'" % acc)
    assert res["totalSize"] == 1
    assert res["records"][0]["Account"]["Name"] == "Parent Co"
    assert res["records"][0]["Account"]["attributes"]["type"] == "Account"
    count = sf.query("SELECT COUNT() FROM Contact WHERE AccountId = '%s'" % acc)
    assert count["totalSize"] == 1 and count["records"] == []


def test_format_soql_literals(sf):
    # simple-salesforce's own escaping: quotes, backslashes, lists (IN), datetimes, booleans.
    tricky = "O'Brien \\ Sons"
    a = sf.Account.create({"Name": tricky, "Pendo_Active_Days__c": 3})["id"]
    b = sf.Account.create({"Name": "Plain", "Pendo_Active_Days__c": 7})["id"]
    res = sf.query(format_soql("SELECT Id, Name FROM Account WHERE Name = {}", tricky))
    assert [r["Id"] for r in res["records"]] == [a]
    assert res["records"][0]["Name"] == tricky
    res = sf.query(format_soql("SELECT Id FROM Account WHERE Id IN {} ORDER BY Name DESC", [a, b]))
    assert [r["Id"] for r in res["records"]] == [b, a]  # "Plain" sorts after "O'Brien"
    since = datetime.now(timezone.utc) - timedelta(hours=1)
    res = sf.query(format_soql("SELECT Id FROM Account WHERE CreatedDate > {} AND Pendo_Active_Days__c >= {}",
                               since, 5))
    assert [r["Id"] for r in res["records"]] == [b]
    res = sf.query(format_soql("SELECT Id FROM Account WHERE IsDeleted = {} AND Name LIKE {}", False, "Pl%"))
    assert [r["Id"] for r in res["records"]] == [b]


def test_query_errors(sf):
    with pytest.raises(SalesforceMalformedRequest) as e:
        sf.query("SELECT Nope__c FROM Account")
    assert error_codes(e.value) == ["INVALID_FIELD"]
    with pytest.raises(SalesforceMalformedRequest) as e:
        sf.query("SELECT Id FROM Nope__c")
    assert error_codes(e.value) == ["INVALID_TYPE"]
    with pytest.raises(SalesforceMalformedRequest) as e:
        sf.query("SELEKT Id FROM Account")
    assert error_codes(e.value) == ["MALFORMED_QUERY"]


# --------------------------------------------------------------------------------------------
# Collections and Composite through restful()
# --------------------------------------------------------------------------------------------


def test_collections_create_update_delete(sf):
    records = [{"attributes": {"type": "Account"}, "Name": f"Coll {i}"} for i in range(5)]
    res = sf.restful("composite/sobjects", method="POST", json={"allOrNone": False, "records": records})
    assert [r["success"] for r in res] == [True] * 5
    ids = [r["id"] for r in res]

    upd = [{"attributes": {"type": "Account"}, "id": i, "Name": "Coll updated"} for i in ids]
    upd.append({"attributes": {"type": "Account"}, "id": "001xx000003DGb2999", "Name": "bad"})
    res = sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": False, "records": upd})
    assert [r["success"] for r in res] == [True] * 5 + [False]
    assert res[5]["errors"][0]["statusCode"] == "MALFORMED_ID"
    assert "errorCode" not in res[5]["errors"][0]

    got = sf.restful("composite/sobjects/Account", method="POST", json={"ids": ids, "fields": ["Name"]})
    assert [r["Name"] for r in got] == ["Coll updated"] * 5

    res = sf.restful("composite/sobjects", method="DELETE", params={"ids": ",".join(ids), "allOrNone": "true"})
    assert all(r["success"] for r in res)
    assert {r["id"] for r in res} == set(ids)


def test_collections_all_or_none_rolls_back(sf, admin):
    records = [
        {"attributes": {"type": "Account"}, "Name": "AON ok"},
        {"attributes": {"type": "Account"}},  # Name missing
    ]
    res = sf.restful("composite/sobjects", method="POST", json={"allOrNone": True, "records": records})
    assert res[0]["success"] is False
    assert res[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert res[1]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    assert "id" not in res[1]
    assert not [r for r in admin.dump("Account") if r.get("Name") == "AON ok"]


def test_collections_upsert(sf):
    key = uniq("cu")
    sf.Account.upsert(f"Pendo_Account_Id__c/{key}-0", {"Name": "exists"})
    records = [{"attributes": {"type": "Account"}, "Pendo_Account_Id__c": f"{key}-{i}", "Name": f"CU {i}"}
               for i in range(3)]
    res = sf.restful("composite/sobjects/Account/Pendo_Account_Id__c", method="PATCH",
                     json={"allOrNone": False, "records": records})
    assert [r["created"] for r in res] == [False, True, True]
    assert all(r["success"] for r in res)


def test_composite_with_references(sf):
    key = uniq("comp")
    body = {
        "allOrNone": True,
        "compositeRequest": [
            {"method": "POST", "url": f"/services/data/v{VERSION}/sobjects/Account", "referenceId": "newAcct",
             "body": {"Name": "Composite Co", "Pendo_Account_Id__c": key}},
            {"method": "POST", "url": f"/services/data/v{VERSION}/sobjects/Contact", "referenceId": "newContact",
             "body": {"LastName": "Composite", "AccountId": "@{newAcct.id}"}},
            {"method": "GET", "url": f"/services/data/v{VERSION}/sobjects/Account/@{{newAcct.id}}?fields=Name",
             "referenceId": "readBack"},
        ],
    }
    res = sf.restful("composite", method="POST", json=body)["compositeResponse"]
    assert [r["httpStatusCode"] for r in res] == [201, 201, 200]
    assert [r["referenceId"] for r in res] == ["newAcct", "newContact", "readBack"]
    acc_id = res[0]["body"]["id"]
    assert res[0]["httpHeaders"]["Location"] == f"/services/data/v{VERSION}/sobjects/Account/{acc_id}"
    assert res[2]["body"]["Name"] == "Composite Co"
    assert sf.Contact.get(res[1]["body"]["id"])["AccountId"] == acc_id


def test_composite_all_or_none_failure(sf, admin):
    body = {
        "allOrNone": True,
        "compositeRequest": [
            {"method": "POST", "url": f"/services/data/v{VERSION}/sobjects/Account", "referenceId": "a",
             "body": {"Name": "Rolled back"}},
            {"method": "POST", "url": f"/services/data/v{VERSION}/sobjects/Account", "referenceId": "b",
             "body": {"Name": "Bad", "Nope__c": 1}},
        ],
    }
    res = sf.restful("composite", method="POST", json=body)["compositeResponse"]
    assert res[0]["httpStatusCode"] == 400
    assert res[0]["body"][0]["errorCode"] == "PROCESSING_HALTED"
    assert res[1]["body"][0]["errorCode"] == "INVALID_FIELD"
    assert not [r for r in admin.dump("Account") if r.get("Name") == "Rolled back"]


# --------------------------------------------------------------------------------------------
# Limits and accounting
# --------------------------------------------------------------------------------------------


def test_limits_and_api_usage(sf, admin):
    limits = sf.limits()
    daily = limits["DailyApiRequests"]
    assert daily["Max"] == admin.usage()["dailyApiRequests"]["Max"]
    assert daily["Remaining"] <= daily["Max"]
    assert "DailyBulkV2QueryJobs" in limits
    usage = sf.api_usage["api-usage"]
    assert usage.total == daily["Max"]
    assert usage.used == admin.usage()["dailyApiRequests"]["Used"]


def test_usage_counts_match_what_the_client_sent(sf, admin):
    before = admin.usage()
    acc = sf.Account.create({"Name": "Counted"})["id"]  # rest
    sf.Account.get(acc)  # rest
    sf.Account.update(acc, {"Name": "Counted 2"})  # rest
    sf.describe()  # rest
    sf.query("SELECT Id FROM Account")  # query
    sf.restful("composite/sobjects", method="POST",
               json={"records": [{"attributes": {"type": "Account"}, "Name": "C"}]})  # collections
    sf.restful("composite", method="POST", json={"compositeRequest": [
        {"method": "GET", "url": f"/services/data/v{VERSION}/sobjects/Account/{acc}", "referenceId": "r1"},
        {"method": "GET", "url": f"/services/data/v{VERSION}/sobjects/Account/{acc}", "referenceId": "r2"},
    ]})  # composite: one call however many subrequests
    with pytest.raises(SalesforceResourceNotFound):
        sf.Account.get("001000000000000AAA")  # rest, an error still counts
    sf.limits()  # rest; last, so sf.api_usage reflects the whole sequence
    after = admin.usage()

    def delta(kind):
        return after["byKind"].get(kind, 0) - before["byKind"].get(kind, 0)

    assert delta("rest") == 6
    assert delta("query") == 1
    assert delta("collections") == 1
    assert delta("composite") == 1
    assert delta("auth") == 0
    assert after["dailyApiRequests"]["Used"] - before["dailyApiRequests"]["Used"] == 9
    assert sf.api_usage["api-usage"].used == after["dailyApiRequests"]["Used"]


# --------------------------------------------------------------------------------------------
# Error mapping
# --------------------------------------------------------------------------------------------


def test_not_found(sf):
    with pytest.raises(SalesforceResourceNotFound) as e:
        sf.Account.get("001000000000000AAA")
    assert e.value.status == 404
    assert error_codes(e.value) == ["NOT_FOUND"]


@pytest.mark.parametrize(
    "sobject,data,code",
    [
        ("Account", {"Name": "x", "Nope__c": "y"}, "INVALID_FIELD"),
        ("Account", {"Website": "https://no-name.example"}, "REQUIRED_FIELD_MISSING"),
        ("Contact", {"LastName": "x", "AccountId": "not-an-id"}, "MALFORMED_ID"),
        ("Account", {"Name": "x" * 256}, "STRING_TOO_LONG"),
    ],
)
def test_malformed_request_codes(sf, sobject, data, code):
    with pytest.raises(SalesforceMalformedRequest) as e:
        getattr(sf, sobject).create(data)
    assert e.value.status == 400
    assert error_codes(e.value) == [code]


def test_required_field_missing_names_fields(sf):
    with pytest.raises(SalesforceMalformedRequest) as e:
        sf.Opportunity.create({"Name": "No stage"})
    err = e.value.content[0]
    assert err["errorCode"] == "REQUIRED_FIELD_MISSING"
    assert set(err["fields"]) == {"StageName", "CloseDate"}


def test_duplicate_value(sf):
    key = uniq("dup")
    first = sf.Account.create({"Name": "First", "Pendo_Account_Id__c": key})["id"]
    with pytest.raises(SalesforceMalformedRequest) as e:
        sf.Account.create({"Name": "Second", "Pendo_Account_Id__c": key})
    assert error_codes(e.value) == ["DUPLICATE_VALUE"]
    assert first in e.value.content[0]["message"]


def test_json_parser_error(sf):
    with pytest.raises(SalesforceMalformedRequest) as e:
        sf.restful("sobjects/Account/", method="POST", data="{not json")
    assert error_codes(e.value) == ["JSON_PARSER_ERROR"]


def test_retired_api_version_answers_410(base_url, cert_path, token):
    old = Salesforce(instance_url=base_url, session_id=token["access_token"], version="30.0",
                     session=make_session(cert_path))
    with pytest.raises(SalesforceGeneralError) as e:
        old.describe()
    assert e.value.status == 410


def test_expired_session_raises_in_session_id_mode(sf, admin):
    sf.Account.describe()
    admin.expire_sessions()
    with pytest.raises(SalesforceExpiredSession) as e:
        sf.describe()
    assert e.value.status == 401
    assert error_codes(e.value) == ["INVALID_SESSION_ID"]


def test_expired_session_relogs_in_login_mode(login_session, admin):
    session, adapter = login_session
    sf = Salesforce(username=USERNAME, password=PASSWORD, consumer_key=CLIENT_ID,
                    consumer_secret=CLIENT_SECRET, domain="login", version=VERSION, session=session)
    first = sf.session_id
    admin.expire_sessions()
    # simple-salesforce reads errorCode from the 401 array, logs in again and retries.
    assert sf.Account.describe()["name"] == "Account"
    assert sf.session_id != first
    assert len(adapter.seen) == 2
    assert admin.usage()["byKind"].get("auth") == 2


def test_request_limit_exceeded(sf, admin):
    admin.set_limits({"DailyApiRequests": {"Max": 100, "Remaining": 0}})
    try:
        with pytest.raises(SalesforceRefusedRequest) as e:
            sf.Account.describe()
        assert e.value.status == 403
        assert error_codes(e.value) == ["REQUEST_LIMIT_EXCEEDED"]
        with pytest.raises(SalesforceRefusedRequest):
            sf.query("SELECT Id FROM Account")
    finally:
        admin.set_limits({"DailyApiRequests": {"Max": 100000, "Remaining": 100000}})
    assert sf.Account.describe()["name"] == "Account"


# --------------------------------------------------------------------------------------------
# Fault injection as the client sees it (reset clears faults before every test)
# --------------------------------------------------------------------------------------------


def test_server_unavailable_is_a_general_error(sf, admin):
    admin.set_faults({"serverUnavailable": 1.0})
    with pytest.raises(SalesforceGeneralError) as e:
        sf.describe()
    assert e.value.status == 503
    assert error_codes(e.value) == ["SERVER_UNAVAILABLE"]


def test_unable_to_lock_row(sf, admin):
    admin.set_faults({"unableToLockRow": 1.0})
    with pytest.raises(SalesforceMalformedRequest) as e:
        sf.Account.create({"Name": "Locked"})
    assert error_codes(e.value) == ["UNABLE_TO_LOCK_ROW"]
    res = sf.restful("composite/sobjects", method="POST",
                     json={"records": [{"attributes": {"type": "Account"}, "Name": "L"}]})
    assert res[0]["success"] is False
    assert res[0]["errors"][0]["statusCode"] == "UNABLE_TO_LOCK_ROW"


def test_dropped_connection_surfaces_as_connection_error(sf, admin):
    import requests

    admin.set_faults({"dropConnection": 1.0})
    with pytest.raises(requests.exceptions.ConnectionError):
        sf.describe()
