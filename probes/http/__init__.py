"""http: HTTP/1.1 web servers, with Outlook Web Access / Exchange detection and NTLM information.

Default ports: 80, 443 (implicit TLS), 8080, 8443 (implicit TLS).

Sends, on one keep-alive connection and never following a redirect:

1. ``GET /`` (HTTP/1.1, ``Host``, ``Connection: keep-alive``);
2. read-only ``GET`` requests for the Exchange paths: ``/owa/`` on every server, then
   ``/owa/auth/logon.aspx``, ``/ews/exchange.asmx``, ``/autodiscover/autodiscover.xml``,
   ``/Microsoft-Server-ActiveSync`` and ``/rpc/`` only where a reply hints at Exchange
   (:func:`~probes.http.wire.exchange_hint`: ``Server`` naming IIS/HTTP.sys/Exchange, ASP.NET,
   an NTLM/Negotiate offer, a redirect to ``/owa``/``/exchange``/``/exchweb``, an Exchange header
   or page); most web servers thus get two requests, not seven. With ``--fast`` only ``GET /``;
3. when one of them offers ``WWW-Authenticate: NTLM`` (or ``Negotiate``), the same ``GET`` again with
   ``Authorization: NTLM <NEGOTIATE>``; the server's CHALLENGE is parsed and the exchange stops
   there: no credentials are ever sent.

Collects: the ``Server`` header, kept as text (``details['server']`` and the evidence), and the
product and version only when one of :data:`SERVER_RULES` knows the product (Apache httpd, Tomcat's
Coyote connector, Microsoft IIS with its Windows release, Microsoft HTTPAPI = HTTP.sys, nginx, ...;
each claim names its rule in ``Finding.rule``); other tells (``X-Powered-By``,
``X-AspNet-Version``), the page title, the redirect targets (``Location``, flagged when off the
target), the authentication schemes offered, Exchange facts (``X-OWA-Version``, ``X-FEServer``,
``X-BEServer``, the build in OWA's logon page paths) and the NTLM CHALLENGE's names and Windows
build.

Bodies are read only when framed by ``Content-Length`` or chunked encoding, and at most
:data:`BODY_CAP` bytes; a body that is larger, or delimited only by the connection's close, is
not read (``body_read: false``) and no further request is sent on that connection since it can no
longer be framed.
"""

from __future__ import annotations

# the package's public names are its modules' (as asyncio/__init__.py gathers its own)
from probes.http import classify, probe, wire
from probes.http.classify import *  # noqa: F403
from probes.http.probe import *  # noqa: F403
from probes.http.wire import *  # noqa: F403

__all__ = [*classify.__all__, *wire.__all__, *probe.__all__]
