"""Fixtures for driving the unmodified simple-salesforce client against the emulator.

The emulator is started by ../run.sh (TLS, self-signed certificate) and described to the tests
through the environment:

- SF_EMULATOR_URL: the https base URL the emulator printed (``https://127.0.0.1:PORT``)
- SF_EMULATOR_CERT: the PEM file written by ``--cert-out``
- SF_JWT_KEY: the private key whose public half the emulator trusts for JWT bearer

Only loopback traffic is made: every session built here has ``trust_env = False`` so proxy and
CA-bundle environment variables (``REQUESTS_CA_BUNDLE`` would otherwise override
``session.verify``) cannot send a request anywhere else, and the login adapter below refuses
any host it does not rewrite to the emulator.
"""

import os
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
from requests.adapters import HTTPAdapter
from simple_salesforce import Salesforce

CLIENT_ID = "usagesync-emulator"
CLIENT_SECRET = "emulator-secret"
USERNAME = "integration@usagesync.test"
PASSWORD = "emulator-password"
VERSION = "60.0"


def _required_env(name):
    value = os.environ.get(name)
    if not value:
        pytest.exit(f"{name} is not set: run the suite through conformance/salesforce/run.sh", returncode=2)
    return value


@pytest.fixture(scope="session")
def base_url():
    return _required_env("SF_EMULATOR_URL").rstrip("/")


@pytest.fixture(scope="session")
def cert_path():
    return _required_env("SF_EMULATOR_CERT")


@pytest.fixture(scope="session")
def jwt_key_path():
    return _required_env("SF_JWT_KEY")


REQUEST_TIMEOUT = 60


class TimeoutAdapter(HTTPAdapter):
    """Gives every request a timeout, so a hung emulator fails a test instead of the whole run."""

    def send(self, request, **kwargs):
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = REQUEST_TIMEOUT
        return super().send(request, **kwargs)


def make_session(cert_path):
    """A plain requests.Session that trusts the emulator's certificate and ignores the environment."""
    s = requests.Session()
    s.trust_env = False
    s.verify = cert_path
    s.mount("https://", TimeoutAdapter())
    s.mount("http://", TimeoutAdapter())
    return s


class EmulatorRedirectAdapter(TimeoutAdapter):
    """Transport adapter (requests' documented extension point) that sends requests for
    ``https://*.salesforce.com`` to the emulator instead. simple-salesforce hard-codes its login
    URLs as ``https://{domain}.salesforce.com/...``; nothing in the client is changed, only where
    the bytes go. Every rewritten request is recorded so tests can assert what the client sent.
    """

    def __init__(self, emulator_base, **kwargs):
        super().__init__(**kwargs)
        self.emulator = urlsplit(emulator_base)
        self.seen = []

    def send(self, request, **kwargs):
        parts = urlsplit(request.url)
        if not (parts.hostname or "").endswith(".salesforce.com"):
            raise RuntimeError(f"refusing to send a request to {parts.hostname}")
        self.seen.append((request.method, request.url, dict(request.headers), request.body))
        request.url = urlunsplit((self.emulator.scheme, self.emulator.netloc, parts.path, parts.query, ""))
        request.headers["Host"] = self.emulator.netloc
        return super().send(request, **kwargs)


@pytest.fixture
def login_session(base_url, cert_path):
    """A session whose ``*.salesforce.com`` traffic lands on the emulator; returns (session, adapter)."""
    s = make_session(cert_path)
    adapter = EmulatorRedirectAdapter(base_url)
    # Longest prefix wins in requests: every salesforce.com login host goes through the adapter.
    for host in ("login", "test", "usagesync-emulator.my"):
        s.mount(f"https://{host}.salesforce.com", adapter)
    return s, adapter


class Admin:
    """The emulator's admin API (``/__emulator/*``), which is never counted as API usage."""

    def __init__(self, base_url, session):
        self.base = base_url
        self.s = session

    def _ok(self, r):
        assert r.status_code < 300, f"admin call {r.request.method} {r.url} failed: {r.status_code} {r.text[:500]}"
        return r.json()

    def reset(self):
        return self._ok(self.s.post(f"{self.base}/__emulator/reset"))

    def seed(self, sobject, records):
        return self._ok(self.s.post(f"{self.base}/__emulator/records/{sobject}", json=records))

    def dump(self, sobject):
        return self._ok(self.s.get(f"{self.base}/__emulator/records/{sobject}"))

    def add_field(self, sobject, spec):
        return self._ok(self.s.post(f"{self.base}/__emulator/fields/{sobject}", json=spec))

    def usage(self):
        return self._ok(self.s.get(f"{self.base}/__emulator/usage"))

    def set_limits(self, limits):
        return self._ok(self.s.put(f"{self.base}/__emulator/limits", json=limits))

    def set_faults(self, faults):
        return self._ok(self.s.put(f"{self.base}/__emulator/faults", json=faults))

    def set_clock(self, change):
        return self._ok(self.s.put(f"{self.base}/__emulator/clock", json=change))

    def expire_sessions(self):
        return self._ok(self.s.post(f"{self.base}/__emulator/sessions/expire"))


@pytest.fixture(scope="session")
def admin(base_url, cert_path):
    return Admin(base_url, make_session(cert_path))


@pytest.fixture(autouse=True)
def fresh_org(admin):
    """Every test starts from a fresh org with zeroed usage (sessions survive a reset)."""
    admin.reset()
    yield


def password_token(base_url, cert_path):
    r = make_session(cert_path).post(
        f"{base_url}/services/oauth2/token",
        data={
            "grant_type": "password",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "username": USERNAME,
            "password": PASSWORD,
        },
    )
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def token(base_url, cert_path):
    return password_token(base_url, cert_path)


@pytest.fixture
def sf(base_url, cert_path, token):
    """simple-salesforce in its direct mode: an instance URL and a session id from the token endpoint."""
    return Salesforce(
        instance_url=base_url,
        session_id=token["access_token"],
        version=VERSION,
        session=make_session(cert_path),
    )
