"""msrpc: the MS-RPC (DCE/RPC) endpoint mapper on 135/tcp.

Default port: 135 (ncacn_ip_tcp). Client speaks first.

Sends: a DCE/RPC connection-oriented ``bind`` to the endpoint mapper interface (EPM,
``e1af8308-5d1f-11c9-91a4-08002b14a0fa`` v3.0, NDR 2.0 transfer syntax), then ``ept_lookup``
(opnum 2) with ``inquiry_type = RPC_C_EP_ALL_ELTS``, repeated with the returned entry handle until
the list ends (null handle, ``ept_s_not_registered`` or no entries), at most
:data:`MAX_LOOKUPS` calls. Then, on a fresh connection (``Reconnect``), a second ``bind`` to EPM
whose auth verifier carries an NTLMSSP NEGOTIATE (``auth_type`` 10 = RPC_C_AUTHN_WINNT,
``auth_level`` 2 = connect): the ``bind_ack``'s verifier holds the server's CHALLENGE. The
dialogue stops there: no AUTH3, so no credentials (not even anonymous ones) are ever sent.
Read-only: nothing is written.

Collects: the ``bind_ack`` facts (max fragment sizes, secondary address), or the ``bind_nak``
reason; every registered endpoint (interface UUID and version, its well-known name, the
annotation, the protocol sequence and the port, pipe or LRPC name); the roles these imply
(domain controller, Exchange server, DNS server, ...) and the implementation where the behaviour
or the registered interfaces tell (Samba vs Windows). A ``bind_nak``, a ``fault`` or an empty
list still confirm MS-RPC, and the finding records which. From the NTLM bind: the NetBIOS and DNS
names of the host, its domain and forest, the server clock and the NTLM VERSION (a Windows build
names the release; Samba always sends 6.1 build 0), in ``details["ntlm"]`` (``ntlm_error`` says
why there is none) and as ``ntlm_*`` host facts, the keys the http probe uses.

In a replay (``ctx.replay``) of another client's conversation (other call ids, other interfaces,
often from mid-connection) the server's PDUs are read as they come: bind_ack facts, an NTLMSSP
CHALLENGE in an auth verifier (names; a known Windows build names "Microsoft Windows"), faults,
and the endpoints of ``ept_lookup``/``ept_map`` answers (NDR 2.0 or NDR64).

Building and parsing use scapy's DCE/RPC (``scapy.layers.dcerpc``) and EPM
(``scapy.layers.msrpce.ept``) layers, imported lazily (scapy takes ~1.5 s to import). Framing
(the 16-byte common header and ``frag_len``) is a few lines of ``struct``: it must run on every
received byte and stay cheap and strictly bounded.
"""

from __future__ import annotations

# the package's public names are its modules' (as asyncio/__init__.py gathers its own)
from probes.msrpc import classify, probe, wire
from probes.msrpc.classify import *  # noqa: F403
from probes.msrpc.probe import *  # noqa: F403
from probes.msrpc.wire import *  # noqa: F403

__all__ = [*wire.__all__, *classify.__all__, *probe.__all__]
