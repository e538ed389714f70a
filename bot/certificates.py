"""A TLS certificate this host does not trust, said as such: which service, why OpenSSL refused
it, and what to do. Left to the generic wording, it read "cannot connect to https://…; check the
URL and the network" (Evo Voice) or "cannot reach https://slack.com/api/
(ClientConnectorCertificateError)" (Slack), which sends an operator to the firewall when the
usual cause is a proxy that inspects HTTPS with a certificate authority of its own, or a
container without CA certificates."""

from __future__ import annotations

import ssl

import aiohttp

FIX = ("if a proxy inspects HTTPS on this network, set SSL_CERT_FILE to the file (PEM) of its "
       "certificate authority; otherwise check this host's clock and its CA certificates")


def refused_certificate(exc: BaseException) -> str | None:
    """Why OpenSSL refused the certificate, when that is why `exc` (or what caused it: an Evo
    Voice error wraps httpx's, which wraps aiohttp's) failed; None when it is not."""
    seen: BaseException | None = exc
    for _ in range(10):  # a cause's chain is short; never follow a cycle for good
        if seen is None:
            return None
        if isinstance(seen, aiohttp.ClientConnectorCertificateError):
            seen = seen.certificate_error
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen.verify_message or seen.reason or "certificate verify failed"
        seen = seen.__cause__ or seen.__context__
    return None


def untrusted(url: str, exc: BaseException) -> str | None:
    """"the certificate of URL is not trusted here (why)", or None when `exc` is no such refusal."""
    reason = refused_certificate(exc)
    return None if reason is None else f"the certificate of {url} is not trusted here ({reason})"
