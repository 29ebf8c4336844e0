"""smb: SMB over TCP on 445 (direct) and 139 (NetBIOS session service).

Default ports: 445 (``microsoft-ds``: each message behind a zero byte and a 24-bit length) and 139
(``netbios-ssn``: a NetBIOS SESSION REQUEST to ``*SMBSERVER`` first, RFC 1002). Client speaks first.

Sends: an SMB2 NEGOTIATE offering dialects 2.0.2, 2.1, 3.0, 3.0.2 and 3.1.1 with the 3.1.1
negotiate contexts (preauth integrity, encryption, signing); then an SMB2 SESSION_SETUP whose
SPNEGO token carries an NTLMSSP NEGOTIATE. The dialogue stops at the server's CHALLENGE: no
AUTHENTICATE, so no credentials (not even anonymous ones) are sent, and nothing is written. A
server that hangs up on the SMB2 NEGOTIATE (SMB1 only: Windows 2000/2003, Samba 3) gets, on a fresh
connection, an SMB1 NEGOTIATE offering ``NT LM 0.12``, ``SMB 2.002`` and ``SMB 2.???``, then an SMB1
SESSION_SETUP_ANDX: with extended security the same NTLMSSP NEGOTIATE; without, an anonymous one
(empty account, domain and password), the only way such servers name themselves.

Collects: the dialect, signing enabled/required, the server GUID, capabilities, maximum
transact/read/write sizes, the server's clock and boot time where given (Samba and recent Windows
send a zero boot time), the 3.1.1 contexts (hash, cipher, signing algorithm) and the SPNEGO
mechanisms offered; from the CHALLENGE (``scanner.ntlm``): NetBIOS and DNS names of the computer
and domain, the forest, the server clock and the NTLM VERSION, in ``details["ntlm"]`` and as the
``ntlm_*`` host facts the other probes share; from SMB1: NativeOS, NativeLanMan, the primary
domain. Samba vs Windows by the rules of :mod:`probes.smb.classify` (``rule`` =
``portproof:smb/<id>``); a Samba version only when SMB1's NativeLanMan states it.
``details["nmap_service"]`` holds nmap's name for the port's transport.

In a replay (``ctx.replay``) the server's messages are read in order whatever the captured client
asked (see ``SMBProbe._replay``).

Requests are built with scapy's SMB, SMB2 and SPNEGO layers; replies are parsed with small
``struct`` code (why: :mod:`probes.smb.wire`).
"""

from __future__ import annotations

# the package's public names are its modules' (as asyncio/__init__.py gathers its own)
from probes.smb import classify, probe, wire
from probes.smb.classify import *  # noqa: F403
from probes.smb.probe import *  # noqa: F403
from probes.smb.wire import *  # noqa: F403

__all__ = [*wire.__all__, *classify.__all__, *probe.__all__]
