"""Hostile input: every payload serializer under arbitrary JSON, and named attacks on POST /jobs.

Whatever a client sends, the answer is a clear 4xx with a JSON body, never a 500, and a refused
request stores nothing: no row, nothing on a queue.
"""

from __future__ import annotations

import json
import math
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from jobs import redis_store, services
from jobs.api import parsers
from jobs.api.parsers import MAX_DEPTH
from jobs.handlers import get_job_type, job_type_names
from jobs.models import Job
from tests.factories import make_user

BUILT_IN_TYPES = ["echo", "email", "fail", "sleep", "webhook"]
PROPERTY_SETTINGS = hypothesis_settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


# --------------------------------------------------------------------------- strategies

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=50)
)
any_json = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=20), children, max_size=5),
    max_leaves=30,
)
# Text that a JSON body can carry and a database can store: no NUL (the parser refuses it), no surrogates.
storable_text = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"))

_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
hostnames = st.builds(
    lambda labels, tld: ".".join([*labels, tld]),
    st.lists(_label, min_size=1, max_size=3),
    st.sampled_from(["com", "org", "net", "io", "dev"]),
).filter(lambda host: host not in {"localhost"} and not host.endswith(".localhost"))
emails = st.builds(
    lambda local, host: f"{local}@{host}",
    st.from_regex(r"[a-z0-9]([a-z0-9._+-]{0,15}[a-z0-9])?", fullmatch=True).filter(lambda local: ".." not in local),
    hostnames,
)
one_line = storable_text.filter(lambda text: "\n" not in text and "\r" not in text)

VALID_PAYLOADS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "echo": st.dictionaries(storable_text, any_json, max_size=5),
    "sleep": st.builds(
        lambda seconds: {"seconds": seconds}, st.floats(min_value=0, max_value=3600) | st.integers(0, 3600)
    ),
    "fail": st.one_of(
        st.just({}),
        st.builds(lambda message: {"message": message}, storable_text.filter(lambda text: text.strip())),
    ).filter(lambda payload: len(payload.get("message", "").strip()) <= 1000),
    "email": st.fixed_dictionaries(
        {"to": emails | st.lists(emails, min_size=1, max_size=5)},
        optional={"subject": one_line.filter(lambda text: len(text.strip()) <= 998), "body": storable_text},
    ),
    "webhook": st.fixed_dictionaries(
        {
            "url": st.builds(
                lambda scheme, host, path: f"{scheme}://{host}/{path}",
                st.sampled_from(["http", "https"]),
                hostnames,
                st.from_regex(r"[a-z0-9/_-]{0,30}", fullmatch=True),
            )
        },
        optional={
            "body": any_json,
            "headers": st.dictionaries(
                st.from_regex(r"X-[A-Za-z0-9-]{1,20}", fullmatch=True),
                storable_text.filter(lambda text: text.strip() and len(text.strip()) <= 4096),
                max_size=3,
            ),
        },
    ),
}


def validate(job_type: str, data: Any):
    serializer = get_job_type(job_type).payload_serializer(data=data)
    return serializer.is_valid(), serializer


# --------------------------------------------------------------------------- payload serializers


def test_every_built_in_type_has_a_strategy_here():
    assert set(BUILT_IN_TYPES) <= set(job_type_names())
    assert set(VALID_PAYLOADS) == set(BUILT_IN_TYPES)


@pytest.mark.parametrize("job_type", BUILT_IN_TYPES)
def test_valid_payloads_are_accepted(job_type):
    @PROPERTY_SETTINGS
    @given(VALID_PAYLOADS[job_type])
    def check(payload):
        valid, serializer = validate(job_type, payload)
        assert valid, (payload, serializer.errors)
        json.dumps(serializer.validated_data, allow_nan=False)  # what is accepted can be stored and rendered

    check()


@pytest.mark.parametrize("job_type", BUILT_IN_TYPES)
def test_arbitrary_json_is_accepted_or_refused_with_field_errors_never_an_exception(job_type):
    @PROPERTY_SETTINGS
    @given(any_json)
    def check(data):
        valid, serializer = validate(job_type, data)
        if valid:
            json.dumps(serializer.validated_data, allow_nan=False)
        else:
            assert serializer.errors and isinstance(serializer.errors, dict)

    check()


@pytest.mark.parametrize("job_type", BUILT_IN_TYPES)
def test_arbitrary_objects_with_the_known_field_names_never_raise(job_type):
    names = list(get_job_type(job_type).payload_serializer().fields) or ["x"]

    @PROPERTY_SETTINGS
    @given(st.dictionaries(st.sampled_from(names), any_json, max_size=len(names)))
    def check(data):
        valid, serializer = validate(job_type, data)
        assert valid or serializer.errors

    check()


# --------------------------------------------------------------------------- the parser


def test_parser_refuses_what_cannot_be_stored_or_walked():
    deep = {"a": 1}
    for _ in range(MAX_DEPTH):
        deep = [deep]

    assert parsers.json_problem(deep) == f"nested deeper than {MAX_DEPTH} levels."
    assert parsers.json_problem({"k": "a\x00b"}) == "strings may not contain NUL (\\u0000)."
    assert parsers.json_problem({"a\x00": 1}) is not None
    assert parsers.json_problem(["\ud800"]) == "strings may not contain lone surrogates (\\ud800-\\udfff)."
    assert parsers.json_problem({"n": math.inf}) == "numbers must be finite."
    assert parsers.json_problem({"ok": ["ünïcødé 🎉", 1.5, None, {"x": [True]}]}) is None


@PROPERTY_SETTINGS
@given(any_json)
def test_parser_finds_no_problem_in_ordinary_json(data):
    if parsers.json_problem(data) is None:
        return
    text = json.dumps(data)
    assert "\\u0000" in text or "\\ud" in text  # the only problems st.text can produce


# --------------------------------------------------------------------------- POST /jobs


def test_the_api_parses_json_with_the_guarded_parser():
    from jobs.api.views import JobViewSet

    assert settings.REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"] == ["jobs.api.parsers.JSONParser"]
    assert JobViewSet.parser_classes == [parsers.JSONParser]


def assert_refused(response, status: int, *, mentions: str = "") -> dict:
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert isinstance(body, dict) and body, body
    if mentions:
        assert mentions in json.dumps(body, ensure_ascii=False), body
    assert Job.objects.count() == 0
    assert all(queue.count == 0 for queue in redis_store.queues())
    assert not list(redis_store.connection().scan_iter("rq:job:*"))
    return body


def post_raw(api, body: bytes, content_type: str = "application/json", path: str = "/jobs", **headers):
    return api.generic("POST", path, body, content_type=content_type, **headers)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.django_db(transaction=True)
class TestPostJobs:
    def test_body_over_the_limit_is_413(self, api):
        body = json.dumps({"type": "echo", "payload": {"blob": "x" * settings.MAX_BODY_BYTES}}).encode()

        assert_refused(post_raw(api, body), 413, mentions="limit")

    def test_100k_levels_of_nesting_is_400(self, api):
        body = '{"type": "echo", "payload": {"deep": ' + nested(100_000) + "}}"

        assert_refused(post_raw(api, body.encode()), 400, mentions="nested deeper")

    def test_nesting_just_past_the_limit_is_400_and_just_within_is_accepted(self, api):
        # The body is level 1 and the payload level 2: the payload may hold MAX_DEPTH - 2 more levels.
        too_deep = '{"type": "echo", "payload": {"deep": ' + nested(MAX_DEPTH - 1) + "}}"
        assert_refused(post_raw(api, too_deep.encode()), 400, mentions="nested deeper")

        deepest = {"type": "echo", "payload": {"deep": json.loads(nested(MAX_DEPTH - 2))}}
        response = api.post("/jobs", deepest, format="json")
        assert response.status_code == 201, response.content
        assert response.json()["payload"] == deepest["payload"]

    def test_deep_nesting_in_a_batch_is_400(self, api):
        body = '{"jobs": [{"type": "echo", "payload": {"deep": ' + nested(5_000) + "}}]}"

        assert_refused(post_raw(api, body.encode(), path="/jobs/batch"), 400, mentions="nested deeper")

    @pytest.mark.parametrize(
        "body",
        [
            b'{"type": "echo", "payload": {"bad": "\xff\xfe"}}',
            b'{"type": "\xc3\x28"}',
            b"\xef\xbb\xbf\xff",
        ],
        ids=["invalid-bytes", "truncated-sequence", "bom-then-garbage"],
    )
    def test_invalid_utf8_is_400(self, api, body):
        assert_refused(post_raw(api, body), 400, mentions="JSON parse error")

    @pytest.mark.parametrize(
        "body",
        [
            {"type": "echo", "payload": {"text": "a\u0000b"}},
            {"type": "echo", "payload": {"a\u0000b": 1}},
            {"type": "echo\u0000"},
            {"type": "email", "payload": {"to": "a@example.com", "subject": "hi\u0000"}},
            {"type": "echo", "queue": "default\u0000"},
        ],
        ids=["payload-value", "payload-key", "type", "email-subject", "queue"],
    )
    def test_nul_in_any_string_is_400(self, api, body):
        assert_refused(api.post("/jobs", body, format="json"), 400, mentions="NUL")

    def test_raw_nul_byte_in_the_body_is_400(self, api):
        assert_refused(post_raw(api, b'{"type": "echo", "payload": {"t": "a\x00b"}}'), 400)

    def test_lone_surrogate_is_400(self, api):
        assert_refused(post_raw(api, b'{"type": "echo", "payload": {"t": "\\ud800"}}'), 400, mentions="surrogate")

    def test_number_too_large_for_a_float_is_400(self, api):
        assert_refused(post_raw(api, b'{"type": "echo", "payload": {"n": 1e400}}'), 400, mentions="finite")

    def test_integer_with_too_many_digits_is_400(self, api):
        assert_refused(post_raw(api, b'{"type": "echo", "payload": {"n": ' + b"9" * 5000 + b"}}"), 400)

    def test_nan_is_400(self, api):
        assert_refused(post_raw(api, b'{"type": "echo", "payload": {"n": NaN}}'), 400)

    def test_huge_api_key_header_is_401(self, anon):
        anon.credentials(HTTP_X_API_KEY="sf_" + "k" * 65_536)

        assert_refused(anon.post("/jobs", {"type": "echo"}, format="json"), 401)

    def test_huge_idempotency_key_header_is_400(self, api):
        response = api.post("/jobs", {"type": "echo"}, format="json", HTTP_IDEMPOTENCY_KEY="k" * 65_536)

        assert_refused(response, 400, mentions="Idempotency-Key")

    def test_huge_content_type_header_is_415(self, api):
        assert_refused(post_raw(api, b'{"type": "echo"}', content_type="application/" + "x" * 65_536), 415)

    def test_idempotency_key_one_past_the_limit_is_400(self, api):
        response = api.post("/jobs", {"type": "echo"}, format="json", HTTP_IDEMPOTENCY_KEY="k" * 256)

        assert_refused(response, 400, mentions="Idempotency-Key")

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"type": "ëcho"}, "type"),
            ({"type": "échø 🎉"}, "type"),
            ({"type": "echo", "queue": "défault"}, "queue"),
            ({"type": "echo", "run_at": "2030-01-01T00:00:00Z "}, "run_at"),  # noqa: RUF001 - a no-break space
            ({"type": "echo", "delay": "10 s"}, "delay"),
            ({"type": "email", "payload": {"to": "ops@exämple.com", "subject": "a\u2028b\nc"}}, "payload"),
            ({"type": "webhook", "payload": {"url": "http://ʟocalhost/"}}, "payload"),
            ({"type": "echo", "tÿpe": "echo"}, "tÿpe"),
        ],
    )
    def test_unicode_in_refused_string_fields_is_400_naming_the_field(self, api, body, field):
        error = assert_refused(api.post("/jobs", body, format="json"), 400)

        assert field in error, error

    def test_unicode_digits_are_read_as_the_numbers_they_are(self, api):
        run_at = (services.now() + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
        fullwidth = run_at.translate({ord(digit): 0xFF10 + int(digit) for digit in "0123456789"})
        body = {"type": "echo", "run_at": fullwidth, "max_retries": "３", "timeout": "١٠"}  # noqa: RUF001 - non-ASCII digits

        response = api.post("/jobs", body, format="json")

        assert response.status_code == 201, response.content
        job = response.json()
        assert (job["run_at"], job["max_retries"], job["timeout"]) == (run_at, 3, 10)

    def test_unicode_idempotency_key_is_400(self, api):
        response = api.post("/jobs", {"type": "echo"}, format="json", HTTP_IDEMPOTENCY_KEY="clé-🎉")

        assert_refused(response, 400, mentions="Idempotency-Key")

    def test_unicode_in_accepted_string_fields_round_trips(self, api):
        payload = {
            "to": ["ops@exämple.com", "ops@例え.jp"],
            "subject": "Grüße 🎉 مرحبا שלום",
            "body": "ℌ𝔢𝔩𝔩𝔬\u200d\u0301 𝄞",  # noqa: RUF001 - look-alike letters are the point
        }

        response = api.post("/jobs", {"type": "email", "payload": payload}, format="json")

        assert response.status_code == 201, response.content
        assert response.json()["payload"] == payload
        assert Job.objects.get().payload == payload

    def test_unicode_keys_and_values_in_an_echo_payload_round_trip(self, api):
        payload = {"ключ": "значение", "🔑": ["🎉", "\u202etxt.exe"], "": {"ﷺ": None}}

        response = api.post("/jobs", {"type": "echo", "payload": payload}, format="json")

        assert response.status_code == 201, response.content
        assert api.get(response["Location"]).json()["payload"] == payload

    @pytest.mark.parametrize("body", [b"[]", b'"echo"', b"null", b"1", b"", b"{", b'{"type": "echo"}{}'])
    def test_not_a_json_object_is_400(self, api, body):
        assert_refused(post_raw(api, body), 400)

    def test_not_json_is_415(self, api):
        assert_refused(post_raw(api, b"type=echo", content_type="application/x-www-form-urlencoded"), 415)

    @pytest.mark.parametrize(
        "run_at", ["9999-12-31T23:59:59.500000Z", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]
    )
    def test_run_at_at_the_edge_of_the_calendar_is_400(self, api, run_at):
        assert_refused(api.post("/jobs", {"type": "echo", "run_at": run_at}, format="json"), 400, mentions="run_at")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "limit", ["²", "١٢", "٣", "0", "00", "-1", "1e3", " 5", pytest.param("9" * 5000, id="5000-digits")]
)
def test_list_limit_that_is_not_ascii_digits_is_400(anon, limit):
    response = anon.get("/jobs", {"limit": limit})

    if limit == "9" * 5000:  # a number, just a big one: capped like any limit over 500
        assert response.status_code == 200
    else:
        assert response.status_code == 400, response.content
        assert "limit" in response.json()


@pytest.mark.django_db
@pytest.mark.parametrize("position", ["abc", "1.5", "1e9", "", "9" * 40])
def test_decodable_cursor_with_a_non_integer_position_is_400(anon, position):
    from base64 import b64encode
    from urllib.parse import urlencode

    cursor = b64encode(urlencode({"p": position}).encode()).decode()

    response = anon.get("/jobs", {"cursor": cursor})

    assert response.status_code == 400, response.content
    assert "cursor" in response.json()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query",
    ["payload__contains=x", "result__contains=x", "error__regex=(", "id__regex=(", "status__regex=(", "payload__a=1"],
)
def test_admin_changelist_lookups_outside_its_filters_are_refused_not_500(client, query):
    client.force_login(make_user("root", superuser=True))
    client.raise_request_exception = False

    response = client.get(f"/admin/jobs/job/?{query}")

    assert response.status_code == 400


@pytest.mark.django_db(transaction=True)
def test_admin_changelist_filters_still_work(client, submit):
    submit({"type": "echo", "payload": {}})
    client.force_login(make_user("root", superuser=True))

    for query in ["status__exact=queued", "type__exact=echo", "created_at__gte=2020-01-01+00:00:00%2B00:00"]:
        assert client.get(f"/admin/jobs/job/?{query}").status_code == 200, query
    assert client.get("/admin/jobs/apikey/?revoked_at__isempty=1&scope__exact=read").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        '{"type": "echo", "type": "webhook", "payload": {"url": "http://127.0.0.1/"}}',
        '{"type": "echo", "payload": {"a": 1, "a": 2}}',
        '{"jobs": [{"type": "echo", "queue": "high", "queue": "low"}]}',
    ],
)
def test_duplicate_json_keys_are_400(api, body):
    path = "/jobs/batch" if body.startswith('{"jobs"') else "/jobs"

    response = api.post(path, body, content_type="application/json")

    assert response.status_code == 400
    assert "duplicate key" in response.json()["detail"]
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_chunked_body_is_411_not_an_empty_body(api):
    response = api.post("/jobs", b"", content_type="application/json", HTTP_TRANSFER_ENCODING="chunked")

    assert response.status_code == 411
    assert "Content-Length" in response.json()["detail"]
    assert not Job.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("length", ["²", "1²", "-1", "0x10", "١٢"])
def test_a_content_length_that_is_not_ascii_digits_is_400(api, length):
    response = api.post("/jobs", b"{}", content_type="application/json", CONTENT_LENGTH=length)

    assert response.status_code == 400
    assert response.json() == {"detail": "Invalid Content-Length header."}
    assert not Job.objects.exists()
