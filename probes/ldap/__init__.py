"""LDAP probe: anonymous rootDSE search on 389/379/390/3268 and, inside implicit TLS, 636/3269.

Default ports: 389, 379 (Exchange SRS), 390, 3268 (AD global catalog); 636 and 3269 over LDAPS
(the engine starts TLS before the dialogue).

What it sends (all anonymous, no bind; message ids 1, 2, 3, ... so requests replay byte for byte):

1. a base-scope search of the root DSE (``""``, filter ``(objectClass=*)``) asking for the
   attributes that decide the product (:data:`ROOT_DSE_ATTRIBUTES`, plus ``*`` and ``+``);
2. for OpenLDAP only, when the rootDSE names a ``monitorContext``: a base search of that entry for
   ``monitoredInfo`` (the only place slapd states its version, readable when the ACL allows);
3. a base search of the default naming context (``objectClass`` only, size limit 1) to learn
   whether an anonymous client can read below the rootDSE;
4. when the rootDSE advertises the StartTLS extended operation (1.3.6.1.4.1.1466.20037) and the
   connection is not TLS yet: the StartTLS extended request, and the TLS handshake if accepted;
5. an unbind.

What it collects: the product (Microsoft AD DS, AD LDS/ADAM, Samba AD DC, OpenLDAP, 389 / Red Hat
Directory Server, or a generic LDAP server), its version where the server states it, the Windows
Server generation implied by the functional level and capability OIDs (a range when ambiguous),
the directory role (domain controller, global catalog), the AD domain, forest, DNS host name and
site, naming contexts, SASL mechanisms, StartTLS, and what an anonymous client may read. A server
that refuses the search with an LDAP error (bind required, unwilling to perform) or a notice of
disconnection is still confirmed as LDAP, with the error as evidence.

Messages are encoded and decoded with ldap3's protocol layer (``ldap3.protocol.rfc4511`` types and
its pyasn1 BER codec; no ldap3 Connection: the engine does the I/O). Framing by BER length is
done here (:func:`frame_ldap_message`) because ldap3 only frames inside its own socket strategy.
ldap3 and pyasn1 are imported lazily so that loading the probe registry stays fast.
"""

from __future__ import annotations

# the package's public names are its modules' (as asyncio/__init__.py gathers its own)
from probes.ldap import classify, probe, wire
from probes.ldap.classify import *  # noqa: F403
from probes.ldap.probe import *  # noqa: F403
from probes.ldap.wire import *  # noqa: F403
from probes.ldap.wire import (
    MAX_VALUES_PER_ATTRIBUTE as MAX_VALUES_PER_ATTRIBUTE,  # not in __all__: tests import it from here
)
from probes.ldap.wire import _ldap3 as _ldap3  # not in __all__: tests import it from here

__all__ = [*wire.__all__, *classify.__all__, *probe.__all__]
