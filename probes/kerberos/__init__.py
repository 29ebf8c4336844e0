"""kerberos and kpasswd probes: the Kerberos KDC on 88 and the password-change service on 464.

Default ports: 88 (tcp, udp: service ``kerberos``), 464 (tcp, udp: service ``kpasswd``). Client
speaks first. Over TCP every message carries a 4-byte big-endian length prefix (RFC 4120 7.2.2,
RFC 3244 2); over UDP one datagram is one message.

``kerberos`` sends AS-REQs without pre-authentication (RFC 4120 3.1.1, 5.4.1): one for a made-up
principal (``portproof-<random hex from ctx.rng>``), then, when the realm is known, one for the AD
``krbtgt`` account. The realm is the ``kerberos_realm`` host fact (named by a kpasswd reply or a
KDC before), else the LDAP/DNS probes' ``ad_domain`` in upper case, else ``PORTPROOF.INVALID``.
No credential, timestamp or key is ever sent, so no reply can carry anything a password could be
guessed from. The KRB-ERRORs give: realm, server time (stime/susec), error codes, e-text, which
optional fields the KDC fills in, the PA-DATA it offers and the PA-ETYPE-INFO2 encryption types;
MIT vs Heimdal vs Samba's AD DC (Heimdal inside) vs Microsoft's KDC are told apart from these
(:mod:`probes.kerberos.classify` cites the source of each rule).

``kpasswd`` sends a 10-byte malformed change-password request (an empty SEQUENCE where the AP-REQ
belongs); the error reply (kpasswd header with an AP-REP length of 0 and a KRB-ERROR whose e-data is
an RFC 3244 result code and string) names kpasswd, its realm (``kadmin/changepw@REALM``) and, by its
wording, Samba.

In a replay the KDC's messages to another client (AS-REP, TGS-REP, KRB-ERROR) are read as they
come: realm, ticket service name and encryption types; never any encrypted part.

ASN.1 is built and decoded with scapy's Kerberos layer (imported lazily); one reply decodes in
about 1 ms (``tests/probes/test_kerberos.py`` bounds it).
"""

from __future__ import annotations

from probes.kerberos import classify, probe, wire
from probes.kerberos.classify import *  # noqa: F403
from probes.kerberos.probe import *  # noqa: F403
from probes.kerberos.wire import *  # noqa: F403

__all__ = [*wire.__all__, *classify.__all__, *probe.__all__]
