"""DNS probe (UDP and TCP): confirm DNS and name the server product.

Default ports: 53/udp and 53/tcp.

Sends (all read-only, cheap, recursion-desired bit clear, EDNS0 with a 1232-byte payload):

1. ``. IN SOA`` with the EDNS NSID option (RFC 5001): every DNS server answers it somehow
   (NOERROR, REFUSED, FORMERR...), so it decides "this is DNS";
2. ``. IN NS``;
3. ``version.bind``, ``hostname.bind``, ``id.server``, ``version.server`` as CHAOS TXT;
4. the PTR of the target address (reverse zone names often reveal the forward zone);
   when no product is known by then: ``invalid. IN SOA`` (RFC 6761 special-use name: answered
   locally or refused, never recursed; Unbound answers it from a built-in zone);
5. SOA (then NS) of candidate zones: the AD domain another probe found (``ctx.host_facts``),
   the target's name and its parents, names seen in the replies (hostname.bind, NSID, PTR);
6. when a zone is found: ``_ldap._tcp.dc._msdcs.<zone>`` SRV; when that names domain
   controllers (an AD DNS server), also ``_kerberos._tcp.<zone>`` and ``_gc._tcp.<zone>``.

Collects: rcode/flags/OPT of every reply, the CHAOS strings, NSID, recursion available (RA),
authoritative zones seen, the AD domain and its DCs, and the product, each claim naming its rule in
``Finding.rule`` (``portproof:dns/<id>``): from version strings by :data:`VERSION_RULES` (BIND
4/8/9, Microsoft DNS, dnsmasq, Unbound, PowerDNS, Knot DNS, NSD, CoreDNS; a string no rule knows,
such as "none" or "[secured]", names nothing and stays in ``version_string``) or, where strings are
hidden, from behaviour (Samba's internal DNS: CHAOS names NXDOMAIN, no OPT in its answers, FORMERR
for the root; BIND: CHAOS answers carry a ``CH NS`` authority record for the CHAOS name; and with
the version hidden, each seen live in the lab: Unbound: the SOA ``localhost. nobody.invalid.`` of
its built-in local zones; PowerDNS Authoritative: version.bind SERVFAIL with AA; Knot DNS and NSD:
REFUSED with EDE 20 "Not Authoritative" outside their zones, NSD adding EDE 18 "Prohibited" to
refused CHAOS queries and Knot none).

Replies whose id, question or opcode do not match the query are ignored (at most
``MAX_UNMATCHED`` per query), never trusted. On UDP a query is sent at most ``UDP_TRIES`` times.

Wire format: dnspython's message layer (``dns.message``) builds and parses every message; this
module only adds the DNS-over-TCP 2-byte length framing (RFC 1035 4.2.2) and the rules.
"""

from __future__ import annotations

# the package's public names are its modules' (as asyncio/__init__.py gathers its own)
from probes.dns import classify, probe, wire
from probes.dns.classify import *  # noqa: F403
from probes.dns.classify import _server_windows as _server_windows  # not in __all__: tests import it from here
from probes.dns.probe import *  # noqa: F403
from probes.dns.wire import *  # noqa: F403
from probes.dns.wire import MAX_DECODE_RECORDS as MAX_DECODE_RECORDS  # not in __all__: tests import it from here

__all__ = [*wire.__all__, *classify.__all__, *probe.__all__]
