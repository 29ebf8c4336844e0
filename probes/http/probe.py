"""The HTTP probe's dialogue: GET /, the Exchange paths, one NTLM NEGOTIATE. Part of the
:mod:`probes.http` package."""

from __future__ import annotations

import base64
from collections.abc import Generator, Sequence
from typing import Any

from probes._microsoft import exchange_release_name
from probes.http.classify import parse_server_header
from probes.http.passive import http_client_hint, identify_http_passive
from probes.http.wire import (
    _TELL_HEADERS,
    BODY_CAP,
    EXCHANGE_FIRST_PATHS,
    EXCHANGE_PATHS,
    HEADER_CAP,
    MAX_INTERIM,
    HTTPResponse,
    _summarise,
    build_request,
    exchange_hint,
    frame_http_response,
    host_header,
    ntlm_from_headers,
    parse_auth_schemes,
    parse_http_response,
)
from scanner.api import (
    Dialogue,
    Finding,
    NotThisProtocol,
    Probe,
    ProbeContext,
    Recv,
    RecvClosed,
    RecvTimeout,
    Send,
    Step,
)
from scanner.ntlm import NTLMError, build_negotiate

__all__ = [
    "HTTPProbe",
]


# ---------------------------------------------------------------- probe


class HTTPProbe(Probe):
    """HTTP/1.1 server: product from ``Server``, title, auth schemes, Exchange/OWA, NTLM facts."""

    name = "http"
    services = ("http",)
    transports = ("tcp",)
    ports = (80, 443, 8080, 8443)
    tls_ports = (443, 8443)
    server_first = False
    rarity = 1
    summary = "HTTP server product/version, title, auth schemes, Outlook Web Access and NTLM facts"
    alpn = ("http/1.1", "http/1.0", "h2")

    # ---------------------------------------------------------------- passive hooks (replay)
    def client_hint(self, first_client_bytes: bytes) -> bool:
        """A request line (see :func:`probes.http.passive.http_client_hint`)."""
        return http_client_hint(first_client_bytes)

    def identify_passive(self, server_messages: Sequence[bytes], client_messages: Sequence[bytes]) -> Finding | None:
        """A status line with a ``WWW-Authenticate`` NTLM CHALLENGE; request lines when only the
        client was captured."""
        return identify_http_passive(server_messages, client_messages)

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        """``GET /``, then the Exchange paths (all of them only where a reply hints at Exchange),
        then one NTLM NEGOTIATE where NTLM is offered."""
        host = host_header(ctx)
        step = Recv(frame_http_response, max_size=HEADER_CAP + BODY_CAP)

        # the reply to the first ``GET /`` is what nmap's service database calls the GetRequest
        # reply (its probe sends ``GET / HTTP/1.0``): the driver keeps it for the database
        first_step = Recv(frame_http_response, max_size=HEADER_CAP + BODY_CAP, tag="GetRequest")

        def exchange(
            path: str, authorization: str | None = None, recv: Recv = step
        ) -> Generator[Step, Any, HTTPResponse]:
            """Send one request and return its final response (skipping 1xx interim ones)."""
            yield Send(build_request(path, host, authorization))
            for _ in range(MAX_INTERIM):
                resp = parse_http_response((yield recv))
                if not (100 <= resp.status < 200 and resp.status != 101):
                    return resp
            raise NotThisProtocol("too many interim 1xx responses")

        first: HTTPResponse = yield from exchange("/", recv=first_step)
        finding = Finding(service="http", confidence=10)
        if first.status == 101:
            raise NotThisProtocol("server switched protocols on a plain GET")
        finding.add("status line", f"HTTP/{first.version} {first.status} {first.reason}")
        details: dict[str, Any] = {"requests": {"/": _summarise(first, host)}}
        finding.details = details
        server = first.header("server")
        if server is not None:
            finding.add("Server", server)
            details["server"] = server
            named = parse_server_header(server)
            if named:
                finding.product, finding.version, finding.rule = named.product, named.version, named.rule
                extra = [e for e in (named.os, named.extra) if e]
                for fact, text in named.facts:
                    details[fact] = text
                    if fact == "python":
                        extra.append(f"Python {text}")
                if named.os:
                    details["os"] = named.os
                if extra:
                    finding.extrainfo = "; ".join(extra)
        else:
            finding.confidence = 8
        for tell in _TELL_HEADERS:
            value = first.header(tell)
            if value:
                details.setdefault("tells", {})[tell] = value[:256]
                finding.add(tell, value)
        if first.title:
            details["title"] = first.title
            finding.add("title", first.title)
        self._note_response(finding, "/", first)
        ctx.found(finding)

        usable = first.reusable
        ntlm_path: str | None = None
        ntlm_scheme = "NTLM"
        first_schemes = parse_auth_schemes(first)
        if "NTLM" in first_schemes or "Negotiate" in first_schemes:
            # IIS accepts a raw NTLMSSP token under Negotiate too (it sniffs the signature)
            ntlm_path, ntlm_scheme = "/", "NTLM" if "NTLM" in first_schemes else "Negotiate"
        requests: dict[str, Any] = details["requests"]
        # every site is asked OWA's entry point; the other Exchange paths only once a reply
        # hints at Exchange (most web servers are not: 1 Exchange request instead of 6)
        hinted = exchange_hint(first, requests["/"])
        # --fast: ``GET /`` named the server; the Exchange paths and NTLM only add details
        pending = [] if ctx.fast else list(EXCHANGE_PATHS)
        skipped: list[str] = []  # paths left out while no reply hinted at Exchange
        try:
            while pending:
                path = pending.pop(0)
                if not hinted and path not in EXCHANGE_FIRST_PATHS:
                    skipped.append(path)
                    continue
                if not usable:
                    details["stopped"] = f"connection not reusable after {len(requests)} request(s)"
                    break
                resp: HTTPResponse = yield from exchange(path)
                requests[path] = summary = _summarise(resp, host)
                if not hinted and exchange_hint(resp, summary):
                    hinted = True
                    pending += skipped  # in EXCHANGE_PATHS order, after the ones still to come
                self._note_response(finding, path, resp)
                usable = resp.reusable
                schemes = parse_auth_schemes(resp)
                if ntlm_path is None and ("NTLM" in schemes or "Negotiate" in schemes):
                    ntlm_path = path
                    ntlm_scheme = "NTLM" if "NTLM" in schemes else "Negotiate"
                ctx.found(self._conclude(finding))
            if ntlm_path is not None and usable and "ntlm" not in details and not ctx.fast:
                token = base64.b64encode(build_negotiate()).decode("ascii")
                resp = yield from exchange(ntlm_path, f"{ntlm_scheme} {token}")
                self._record_ntlm(finding, ntlm_path, resp)
        except (RecvClosed, RecvTimeout) as exc:
            details["stopped"] = f"{type(exc).__name__} after {len(requests)} request(s)"
        except NotThisProtocol as exc:
            # the first response proved HTTP; a later garbled one only ends the exchange
            details["stopped"] = f"unparsable response after {len(requests)} request(s): {exc}"
        return ctx.found(self._conclude(finding))

    @classmethod
    def _note_response(cls, finding: Finding, path: str, resp: HTTPResponse) -> None:
        """Facts any response may carry: another ``Server`` header (IIS behind HTTP.sys), and an
        NTLM CHALLENGE already present (seen in captures, where the client sent the NEGOTIATE)."""
        server = resp.header("server")
        first = finding.details.get("server")
        servers: list[str] = finding.details.get("servers") or ([first] if first else [])
        if server and server[:256] not in servers and len(servers) < 8:
            servers.append(server[:256])
            if len(servers) > 1:
                finding.details["servers"] = servers
                finding.add(f"Server on {path}", server)
        if "ntlm" not in finding.details and resp.status == 401 and any(
            len(v.split()) == 2 for v in resp.header_all("www-authenticate")
        ):
            cls._record_ntlm(finding, path, resp, quiet=True)

    @staticmethod
    def _record_ntlm(finding: Finding, path: str, resp: HTTPResponse, quiet: bool = False) -> None:
        """Parse the CHALLENGE answering our NEGOTIATE on ``path`` into details and host facts."""
        try:
            challenge = ntlm_from_headers(resp)
        except NTLMError as exc:
            finding.details["ntlm_error"] = str(exc)
            return
        if challenge is None:
            if not quiet:
                finding.details["ntlm_error"] = f"no NTLM challenge in the {resp.status} answer on {path}"
            return
        facts = challenge.as_dict()
        facts["path"] = path
        finding.details["ntlm"] = facts
        finding.add(f"NTLM challenge on {path}", challenge.summary())
        for key in ("netbios_domain", "dns_domain", "dns_computer", "dns_tree"):
            value = getattr(challenge, key)
            if value:
                finding.host_facts[f"ntlm_{key}"] = value
        if challenge.windows_version:
            finding.host_facts["windows_version"] = challenge.windows_version

    @staticmethod
    def _conclude(finding: Finding) -> Finding:
        """Fold the per-path Exchange tells into ``details['owa']`` and the extrainfo."""
        requests: dict[str, Any] = finding.details.get("requests", {})
        tells: dict[str, str] = {}
        for path, summary in requests.items():
            for key, value in summary.get("exchange", {}).items():
                tells.setdefault(key, value)
                source = f"{path} {key}"
                if all(e.source != source for e in finding.evidence):
                    finding.add(source, value)
        probed = [p for p in EXCHANGE_PATHS if p in requests]
        owa: dict[str, Any] = {"present": bool(tells), "probed": probed}
        if tells:
            build = tells.get("owa_version") or tells.get("owa_build_path")
            if build:
                owa["build"] = build
                release = exchange_release_name(build)
                if release:
                    owa["release"] = release
                    # the build -> release table in probes/_microsoft.py (Microsoft's Exchange build numbers page)
                    owa["rule"] = "portproof:http/owa-exchange-build"
            if tells.get("fe_server"):
                owa["fe_server"] = tells["fe_server"]
            extra = "Microsoft Exchange"
            if owa.get("release"):
                extra = f"{owa['release']}"
            if build:
                extra += f" build {build}"
            if "exchweb" in tells:
                extra = f"Microsoft Exchange ({tells['exchweb']})"
            base = (finding.extrainfo or "").split("; Outlook Web Access:")[0]
            finding.extrainfo = (f"{base}; " if base else "") + f"Outlook Web Access: {extra}"
            finding.host_facts["exchange"] = extra
        finding.details["owa"] = owa
        return finding
