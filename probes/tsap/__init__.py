"""tsap: ISO transport over TCP (RFC 1006 TPKT + ISO 8073 COTP) on 102/tcp, and the layer above.

Default port: 102. Client speaks first.

Sends:

1. a COTP connection request (CR, class 0) with S7-style TSAPs (calling ``0100``, called
   ``0102``) and a TPDU size of 1024; when it is refused (DR/ER), a second CR on a fresh
   connection (``Reconnect``) with libiec61850's TSAPs (``0001``/``0001``), then step 2;
2. after the connection confirm (CC), an ISO session CONNECT carrying a presentation CP, an ACSE
   AARQ and an MMS initiate-request (the bytes libiec61850's client sends) and waits a short
   while: an IEC 61850 / MMS server answers ACCEPT (then an MMS ``identify`` is sent: vendor,
   model, revision); an X.400 MTA would answer at the session/presentation layer naming MHS
   object identifiers (2.6.x);
3. when nothing answers (an S7 stack ignores session PDUs), an S7comm "setup communication"
   job on the same connection; when the peer *closes* (or refuses) on the session CONNECT, the
   same job on a fresh connection (``Reconnect``, CR/CC again); when acknowledged, SZL reads
   0x0011 (module identification: order number, firmware) and 0x001C (component identification:
   module type, station name, serial number).

Collects: the CC's TPDU size, TSAPs, class and options (or the DR reason), then the upper layer
(``details.upper_layer``: ``"mms"``, ``"s7comm"``, ``"x400"`` or None) with its evidence;
``details.reconnects`` counts the fresh connections used. A bare CC proves only the ISO
transport: the upper layer then stays None, never "S7".

Why this order: the lab showed libiec61850 closes the connection on an S7 job, while
python-snap7's S7 server stays silent on a session CONNECT and still answers S7 afterwards, so
"MMS first, S7 on silence" learns both on one connection; a stack that closes on the session
CONNECT gets S7 on a second connection. ``details.s7_untried`` says when S7 could not be asked.

An S7comm PDU where the session answer was expected is taken as the S7 answer (in a replay the
capture holds a client that spoke S7, or our own scan after the silence), and SZL answers are
only decoded as the SZL they say they are (a capture holds other clients' SZL reads).

TPKT/COTP/session framing and the small BER walker are written here (scapy has no COTP or ISO
session layer; ldap3's BER decoder only knows LDAP's tags).
"""

from __future__ import annotations

# the package's public names are its modules' (as asyncio/__init__.py gathers its own)
from probes.tsap import probe, wire
from probes.tsap.probe import *  # noqa: F403
from probes.tsap.wire import *  # noqa: F403

__all__ = [*wire.__all__, *probe.__all__]
