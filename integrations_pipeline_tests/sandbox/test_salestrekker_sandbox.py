"""SalestrekkerSandbox in-process: login both ways, token expiry, the salestrekker.yaml queries run
verbatim with paging and windows, GraphQL errors over HTTP 200, touch/add, determinism, conformance."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from integrations_pipeline.connectors import load_connectors
from integrations_pipeline.sandbox.data import schema_errors
from integrations_pipeline.sandbox.salestrekker import SalestrekkerSandbox

SPEC = load_connectors()["salestrekker"]
API_KEY_LOGIN = SPEC.auth.methods[0].mutation
EMAIL_LOGIN = SPEC.auth.methods[1].mutation
SMALL = {"deals": 230, "contacts": 260, "workflows": 4}
START, END = "2026-10-01T00:00:00Z", "2026-11-21T00:00:00Z"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def gql(
    c: httpx.Client, query: str, variables: dict[str, Any] | None = None, token: str | None = None
) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    response = c.post("/graphql", json={"query": query, "variables": variables or {}}, headers=headers)
    assert response.status_code == 200, response.text  # GraphQL errors travel with HTTP 200
    return response.json()


def login(c: httpx.Client, api_key: str = "sandbox-st-key") -> str:
    body = gql(c, API_KEY_LOGIN, {"apiKey": api_key})
    return body["data"]["authenticate"]["token"]


def fetch_all(c: httpx.Client, token: str, stream: str, limit: int = 200, **window: str) -> list[dict[str, Any]]:
    """Page with the spec's query text, exactly as the engine sends it."""
    query = SPEC.streams[stream].query
    root = "tickets" if stream == "deals" else "contacts"
    items: list[dict[str, Any]] = []
    after = None
    for _ in range(10_000):
        body = gql(c, query, {"limit": limit, "after": after, **window}, token)
        assert "errors" not in body, body
        page = body["data"][root]
        items.extend(page["items"])
        after = page["pageInfo"]["endCursor"]
        if not page["pageInfo"]["hasNextPage"]:
            assert after is None
            return items
        assert after is not None
    raise AssertionError("paging did not end")


@pytest.fixture
def sandbox() -> SalestrekkerSandbox:
    return SalestrekkerSandbox(sizes=SMALL)


@pytest.fixture
def c(sandbox: SalestrekkerSandbox) -> httpx.Client:
    return httpx.Client(transport=sandbox.transport(), base_url="http://salestrekker.test")


def test_login_with_api_key_and_with_email_password(sandbox: SalestrekkerSandbox, c: httpx.Client) -> None:
    token = login(c)
    body = gql(c, EMAIL_LOGIN, {"email": "ops@sandbox.example", "password": "sandbox-pass"})
    other = body["data"]["authenticate"]["token"]
    assert token and other and token != other
    assert sandbox.counts["logins"] == 2
    assert gql(c, SPEC.streams["workflows"].query, token=other)["data"]["workflows"]


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        (API_KEY_LOGIN, {"apiKey": "wrong"}),
        (EMAIL_LOGIN, {"email": "ops@sandbox.example", "password": "wrong"}),
        (EMAIL_LOGIN, {"email": "someone@else.example", "password": "sandbox-pass"}),
    ],
)
def test_bad_credentials(sandbox: SalestrekkerSandbox, c: httpx.Client, query: str, variables: dict) -> None:
    body = gql(c, query, variables)
    assert body["data"] == {"authenticate": None}
    assert body["errors"][0]["message"] == "Invalid credentials"
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert sandbox.counts["logins"] == 0


def test_queries_need_a_valid_token(c: httpx.Client) -> None:
    query = SPEC.streams["workflows"].query
    for token in (None, "st-unknown"):
        body = gql(c, query, token=token)
        assert body["data"] is None and body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    no_bearer = c.post("/graphql", json={"query": query}, headers={"authorization": login(c)}).json()
    assert no_bearer["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


def test_tokens_expire_and_can_be_renewed() -> None:
    clock = FakeClock()
    sandbox = SalestrekkerSandbox(sizes=SMALL, clock=clock)
    c = httpx.Client(transport=sandbox.transport(), base_url="http://salestrekker.test")
    query = SPEC.streams["workflows"].query
    token = login(c)
    clock.now += 14 * 24 * 3600 - 1
    assert "errors" not in gql(c, query, token=token)
    clock.now += 2
    expired = gql(c, query, token=token)
    assert expired["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    token = login(c)
    assert "errors" not in gql(c, query, token=token)
    sandbox.expire_tokens()
    assert gql(c, query, token=token)["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert "errors" not in gql(c, query, token=login(c))
    assert sandbox.counts["logins"] == 3


@pytest.mark.parametrize("stream", ["deals", "contacts"])
def test_yaml_queries_page_to_the_end(sandbox: SalestrekkerSandbox, c: httpx.Client, stream: str) -> None:
    items = fetch_all(c, login(c), stream, limit=50)
    assert len(items) == SMALL[stream] == len({i["id"] for i in items})
    keys = [(i["updatedAt"], i["id"]) for i in items]
    assert keys == sorted(keys)
    assert sorted(items, key=lambda i: i["id"]) == sandbox.truth(stream)  # records are exactly what the query selects


@pytest.mark.parametrize("stream", ["deals", "contacts"])
def test_window_filters(sandbox: SalestrekkerSandbox, c: httpx.Client, stream: str) -> None:
    token = login(c)
    low, high = "2026-10-15T00:00:00Z", "2026-10-29T06:00:00Z"
    items = fetch_all(c, token, stream, limit=20, updatedFrom=low, updatedTo=high)
    expected = sorted(r["id"] for r in sandbox.truth(stream) if low <= r["updatedAt"] < high)
    assert sorted(i["id"] for i in items) == expected != []
    # Inclusive lower bound, exclusive upper bound.
    edge = items[0]["updatedAt"]
    assert fetch_all(c, token, stream, updatedFrom=edge, updatedTo=high)[0]["id"] == items[0]["id"]
    assert items[0]["id"] not in {i["id"] for i in fetch_all(c, token, stream, updatedFrom=low, updatedTo=edge)}
    # Other ISO forms are accepted for the bounds.
    assert len(fetch_all(c, token, stream, updatedFrom="2026-10-15", updatedTo="2026-10-29T06:00:00+00:00")) == len(
        items
    )


def test_workflows_query(sandbox: SalestrekkerSandbox, c: httpx.Client) -> None:
    body = gql(c, SPEC.streams["workflows"].query, token=login(c))
    workflows = body["data"]["workflows"]
    assert len(workflows) == 4 and all(w["stages"] for w in workflows)
    assert sorted(workflows, key=lambda w: w["id"]) == sandbox.truth("workflows")


def test_single_lookups_and_extra_fields(sandbox: SalestrekkerSandbox, c: httpx.Client) -> None:
    token = login(c)
    deal = sandbox.truth("deals")[5]
    query = """query One($id: ID!) { ticket(id: $id) { id name idContacts contacts { id person { information { familyName } } }
               workflow { id name } stage { id name } } }"""
    got = gql(c, query, {"id": deal["id"]}, token)["data"]["ticket"]
    assert got["id"] == deal["id"] and [x["id"] for x in got["contacts"]] == deal["idContacts"]
    assert got["workflow"]["id"] == deal["idWorkflow"] and got["stage"]["id"] == deal["idStage"]
    contact = sandbox.truth("contacts")[3]
    assert gql(c, f'{{ contact(id: "{contact["id"]}") {{ id updatedAt }} }}', token=token)["data"]["contact"] == {
        "id": contact["id"],
        "updatedAt": contact["updatedAt"],
    }
    workflow = sandbox.truth("workflows")[0]
    assert (
        gql(c, f'{{ workflow(id: "{workflow["id"]}") {{ name }} }}', token=token)["data"]["workflow"]["name"]
        == workflow["name"]
    )
    assert gql(c, '{ ticket(id: "nope") { id } }', token=token)["data"]["ticket"] is None
    assert gql(c, "{ labels { id name } }", token=token)["data"]["labels"]


def test_graphql_errors_come_with_http_200(c: httpx.Client) -> None:
    token = login(c)
    invalid = gql(c, "{ tickets(limit: 10) { items { nope } } }", token=token)
    assert "nope" in invalid["errors"][0]["message"] and "data" not in invalid
    syntax = gql(c, "{ tickets(limit: ", token=token)
    assert "Syntax Error" in syntax["errors"][0]["message"]
    too_many = gql(c, SPEC.streams["deals"].query, {"limit": 501}, token)
    assert too_many["data"] is None and too_many["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    missing_var = gql(c, SPEC.streams["deals"].query, {}, token)
    assert missing_var["errors"] and missing_var["data"] is None
    bad_date = gql(c, SPEC.streams["deals"].query, {"limit": 5, "updatedFrom": "yesterday"}, token)
    assert bad_date["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert c.post("/graphql", content=b"not json").status_code == 400


def test_cursor_belongs_to_its_window(c: httpx.Client) -> None:
    token = login(c)
    query = SPEC.streams["deals"].query
    window = {"updatedFrom": START, "updatedTo": END}
    cursor = gql(c, query, {"limit": 10, **window}, token)["data"]["tickets"]["pageInfo"]["endCursor"]
    assert "errors" not in gql(c, query, {"limit": 10, "after": cursor, **window}, token)
    moved = gql(c, query, {"limit": 10, "after": cursor, "updatedFrom": START}, token)
    assert moved["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


def test_touch_and_add_show_up_in_the_next_window(sandbox: SalestrekkerSandbox, c: httpx.Client) -> None:
    token = login(c)
    before = {r["id"]: r for r in sandbox.truth("deals")}
    at = datetime(2026, 11, 21, 2, tzinfo=UTC)
    touched = sandbox.touch("deals", 4, at)
    added = sandbox.add("deals", 2, at + timedelta(minutes=1))
    window = fetch_all(c, token, "deals", limit=3, updatedFrom=END, updatedTo="2026-11-22T00:00:00Z")
    assert [i["id"] for i in window] == sorted(touched) + sorted(added)  # ties on updatedAt order by id
    for item in window[:4]:
        assert item["updatedAt"] == "2026-11-21T02:00:00Z"
        assert item["idStage"] != before[item["id"]]["idStage"] or item["values"] != before[item["id"]]["values"]
    assert len(fetch_all(c, token, "deals", updatedFrom=START, updatedTo=END)) == SMALL["deals"] - 4

    contacts_before = {r["id"]: r for r in sandbox.truth("contacts")}
    for cid in sandbox.touch("contacts", 3, at):
        after = next(r for r in sandbox.truth("contacts") if r["id"] == cid)
        assert after["person"]["contact"]["primary"] != contacts_before[cid]["person"]["contact"]["primary"]
    renamed = sandbox.touch("workflows", 1, at)
    assert next(w for w in sandbox.truth("workflows") if w["id"] == renamed[0])["name"].endswith(")")


def test_duplicate_fault_overlaps_pages(sandbox: SalestrekkerSandbox, c: httpx.Client) -> None:
    token = login(c)
    query = SPEC.streams["contacts"].query
    first = gql(c, query, {"limit": 100}, token)["data"]["contacts"]
    sandbox.faults.inject("duplicate")
    second = gql(c, query, {"limit": 100, "after": first["pageInfo"]["endCursor"]}, token)["data"]["contacts"]
    assert [i["id"] for i in second["items"][:3]] == [i["id"] for i in first["items"][:3]]
    assert len(second["items"]) == 103
    third = gql(c, query, {"limit": 100, "after": second["pageInfo"]["endCursor"]}, token)["data"]["contacts"]
    assert not third["pageInfo"]["hasNextPage"]
    ids = [i["id"] for i in first["items"] + second["items"] + third["items"]]
    assert len(set(ids)) == SMALL["contacts"]


def test_injected_faults_apply(sandbox: SalestrekkerSandbox, c: httpx.Client) -> None:
    sandbox.faults.inject("503")
    assert (
        c.post("/graphql", json={"query": API_KEY_LOGIN, "variables": {"apiKey": "sandbox-st-key"}}).status_code == 503
    )
    sandbox.faults.inject("429")
    limited = c.post("/graphql", json={"query": API_KEY_LOGIN, "variables": {"apiKey": "sandbox-st-key"}})
    assert limited.status_code == 429 and "retry-after" in limited.headers
    sandbox.faults.inject("timeout")
    with pytest.raises(httpx.ReadTimeout):
        login(c)
    assert login(c)


def test_records_conform_and_reference_each_other(sandbox: SalestrekkerSandbox) -> None:
    deals, contacts, workflows = sandbox.truth("deals"), sandbox.truth("contacts"), sandbox.truth("workflows")
    for stream, records in (("deals", deals), ("contacts", contacts), ("workflows", workflows)):
        schema = SPEC.streams[stream].json_schema
        for record in records:
            assert schema_errors(record, schema) == [], record
    contact_ids = {c["id"] for c in contacts}
    stages = {w["id"]: {s["id"] for s in w["stages"]} for w in workflows}
    for deal in deals:
        assert deal["idContacts"] and set(deal["idContacts"]) <= contact_ids
        assert set(deal["idClients"]) <= set(deal["idContacts"])
        assert deal["idStage"] in stages[deal["idWorkflow"]]
        assert deal["timeStamp"] <= deal["updatedAt"]
        assert not (deal["isWon"] and deal["isLost"])
        assert (deal["wonAt"] is not None) == deal["isWon"] and (deal["settledAt"] is not None) == deal["isSettled"]
        assert START <= deal["updatedAt"] < END
    emails = [c["person"]["contact"]["email"] for c in contacts]
    assert len(set(emails)) == len(emails) and all("@" in e for e in emails)


def test_same_seed_same_data() -> None:
    one, two, other = (
        SalestrekkerSandbox(sizes=SMALL),
        SalestrekkerSandbox(sizes=SMALL),
        SalestrekkerSandbox(seed=7, sizes=SMALL),
    )
    for stream in ("deals", "contacts", "workflows"):
        assert json.dumps(one.truth(stream)) == json.dumps(two.truth(stream))
        assert json.dumps(one.truth(stream)) != json.dumps(other.truth(stream))


def test_yaml_fetch_query_reads_one_deal_exactly_as_the_list_query_does(
    sandbox: SalestrekkerSandbox, c: httpx.Client
) -> None:
    token = login(c)
    fetch = SPEC.webhooks.fetch["deals"]
    for deal in sandbox.truth("deals")[:3]:
        body = gql(c, fetch.query, {fetch.id_variable: deal["id"]}, token)
        assert body == {"data": {"ticket": deal}}
    assert gql(c, fetch.query, {fetch.id_variable: "no-such-ticket"}, token) == {"data": {"ticket": None}}
    assert sandbox.counts["graphql ticket"] == 4 and sandbox.counts["graphql tickets"] == 0


def test_changes_post_id_only_webhooks(sandbox: SalestrekkerSandbox) -> None:
    at = datetime(2026, 11, 25, 9, tzinfo=UTC)
    sandbox.touch("deals", 1, at)  # nobody subscribed: nothing is queued
    assert sandbox.webhooks.pending() == 0
    sandbox.webhooks.subscribe("http://receiver.test/hook")
    touched = sandbox.touch("deals", 3, at)
    added = sandbox.add("deals", 1, at)
    open_deal = next(d for d in sandbox.truth("deals") if not d["isWon"] and not d["isLost"])
    assert sandbox.change_deal(open_deal["id"], at + timedelta(hours=1)) == "DealChangesStage"
    bodies = [json.loads(m.body) for m in sandbox.webhooks.queue]
    assert [b["id"] for b in bodies] == [*touched, *added, open_deal["id"]]
    assert all(set(b) == {"id", "event"} for b in bodies)
    assert bodies[3]["event"] == "DealCreated"
    assert {b["event"] for b in bodies[:3]} <= {"DealChangesStage", "DealUpdated"}
    changed = next(d for d in sandbox.truth("deals") if d["id"] == open_deal["id"])
    assert changed["idStage"] != open_deal["idStage"] and changed["updatedAt"] == "2026-11-25T10:00:00Z"
