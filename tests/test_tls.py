"""TLS termination in the gateway itself: `gateway serve --ssl-certfile --ssl-keyfile`, called over https."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import time

import httpx
import pytest

from conftest import ADMIN_KEY, Gateway, one_model_policy

cryptography = pytest.importorskip("cryptography", reason="the `cryptography` package makes the test certificate")

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402



def _self_signed(directory) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return str(cert_path), str(key_path)


@pytest.fixture(scope="module")
def tls(upstream, tmp_module):
    cert, key = _self_signed(tmp_module)
    gateway = Gateway(one_model_policy(upstream.url), tmp_module, wait=False,
                      extra_args=["--ssl-certfile", cert, "--ssl-keyfile", key])
    base = f"https://127.0.0.1:{gateway.port}"
    verify = ssl.create_default_context(cafile=cert)
    deadline = time.monotonic() + 60
    while True:
        if gateway.proc.poll() is not None:
            pytest.fail(f"the gateway exited with {gateway.proc.returncode}:\n{gateway.log()}")
        try:
            httpx.get(base + "/healthz", verify=verify, timeout=1)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                gateway.stop()
                pytest.fail(f"no https answer within 60 s:\n{gateway.log()}")
            time.sleep(0.1)
    yield gateway, base, verify
    gateway.stop()


def test_healthz_over_https(tls):
    gateway, base, verify = tls
    r = httpx.get(base + "/healthz", verify=verify, timeout=5)
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert r.url.scheme == "https"


def test_chat_completion_over_https(tls, mock):
    gateway, base, verify = tls
    with httpx.Client(verify=verify, timeout=10) as client:
        r = client.post(base + "/v1/chat/completions",
                        json={"model": "auto", "messages": [{"role": "user", "content": "Hi over TLS"}]})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == "mock answer to: Hi over TLS"
        assert r.headers["x-gateway-model"] == "edge-a"
        with client.stream("POST", base + "/v1/chat/completions", json={
                "model": "auto", "stream": True, "messages": [{"role": "user", "content": "Streamed"}]}) as s:
            assert s.status_code == 200
            lines = [line for line in s.iter_lines() if line]
        assert lines[-1] == "data: [DONE]"
        status = client.get(base + "/admin/status", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert status.status_code == 200 and status.json()["requests"] >= 2


def test_plain_http_and_untrusted_clients_are_refused(tls):
    gateway, base, verify = tls
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{gateway.port}/healthz", timeout=3).raise_for_status()
    with pytest.raises(httpx.ConnectError):  # the default trust store does not know the self-signed cert
        httpx.get(base + "/healthz", timeout=3)
