"""Microsoft mail and news facts shared by the smtp, imap, pop3, nntp and http probes.

Two different build series show up in Microsoft greetings and must not be mixed up
(sources in ``docs/microsoft-mail.md``):

* the **Exchange build** (``Microsoft Exchange 2000 IMAP4rev1 server version 6.0.6249.0``): the
  major.minor pair names the Exchange release (Microsoft, "Exchange Server build numbers and release
  dates", https://learn.microsoft.com/en-us/exchange/new-features/build-numbers-and-release-dates);
* the **Windows (IIS) service build** of the SMTP and NNTP services that ship with Windows
  (``Microsoft ESMTP MAIL Service, Version: 6.0.3790.1830``): its third field is the Windows build
  (2195 = Windows 2000, 3790 = Windows Server 2003 ...), so it names the operating system, not
  Exchange. Exchange 2000/2003 run their SMTP and NNTP on these Windows services, and add the
  ``XEXCH50``/``X-LINK2STATE`` EHLO keywords.
"""

from __future__ import annotations

__all__ = ["exchange_release", "exchange_release_name", "windows_of_service_build"]

#: Exchange build major.minor -> (release, service pack) (learn.microsoft.com
#: build-numbers-and-release-dates; 8.1/8.2/8.3 are Exchange 2007 SP1-SP3, 14.1/14.2/14.3 Exchange
#: 2010 SP1-SP3; from 2013 on the minor number is the release, not a service pack)
_EXCHANGE_RELEASES: dict[tuple[int, int], tuple[str, str | None]] = {
    (5, 0): ("5.0", None),
    (5, 5): ("5.5", None),
    (6, 0): ("2000", None),
    (6, 5): ("2003", None),
    (8, 0): ("2007", None),
    (8, 1): ("2007", "SP1"),
    (8, 2): ("2007", "SP2"),
    (8, 3): ("2007", "SP3"),
    (14, 0): ("2010", None),
    (14, 1): ("2010", "SP1"),
    (14, 2): ("2010", "SP2"),
    (14, 3): ("2010", "SP3"),
    (15, 0): ("2013", None),
    (15, 1): ("2016", None),
    (15, 2): ("2019", None),
}

#: Windows build (third field of an IIS SMTP/NNTP service version) -> Windows release.
#: 2195 Windows 2000, 3790 Windows Server 2003, 7600/7601 Windows Server 2008 R2 (RTM/SP1),
#: 9200 Windows Server 2012, 9600 Windows Server 2012 R2, 14393 / 17763 / 20348 Windows Server
#: 2016 / 2019 / 2022 (Microsoft's Windows release-information pages; see docs/microsoft-mail.md).
_WINDOWS_BUILDS: dict[int, str] = {
    2195: "Windows 2000",
    3790: "Windows Server 2003",
    7600: "Windows Server 2008 R2",
    7601: "Windows Server 2008 R2",
    9200: "Windows Server 2012",
    9600: "Windows Server 2012 R2",
    14393: "Windows Server 2016",
    17763: "Windows Server 2019",
    20348: "Windows Server 2022",
}


def _numbers(build: str, count: int) -> tuple[int, ...] | None:
    """The first ``count`` numeric fields of a dotted build, or None."""
    parts = build.split(".")
    if len(parts) < count or not all(p.isdigit() and len(p) <= 6 for p in parts[:count]):
        return None
    return tuple(int(p) for p in parts[:count])


def exchange_release(build: str) -> str | None:
    """The Exchange release of an Exchange build (``6.5.7638.1`` -> ``2003``), None if unknown."""
    nums = _numbers(build, 2)
    known = _EXCHANGE_RELEASES.get((nums[0], nums[1])) if nums else None
    return known[0] if known else None


def exchange_release_name(build: str) -> str | None:
    """Microsoft's name of the release and service pack of an Exchange build (``14.2.247.5`` ->
    ``Exchange Server 2010 SP2``, ``6.0.6249.0`` -> ``Exchange 2000 Server``), None if unknown."""
    nums = _numbers(build, 2)
    known = _EXCHANGE_RELEASES.get((nums[0], nums[1])) if nums else None
    if known is None:
        return None
    release, service_pack = known
    # Exchange 2000's product name puts "Server" last; every later release puts it first
    name = "Exchange 2000 Server" if release == "2000" else f"Exchange Server {release}"
    return f"{name} {service_pack}" if service_pack else name


def windows_of_service_build(build: str) -> str | None:
    """The Windows release of an IIS SMTP/NNTP service build (``6.0.3790.1830`` -> Windows Server
    2003); ``5.5.x`` is the NT 4.0 Option Pack's IIS 4 service. None if unknown."""
    nums = _numbers(build, 3)
    if nums is None:
        return None
    if nums[:2] == (5, 5):
        return "Windows NT 4.0 (IIS 4.0, NT 4.0 Option Pack)"
    return _WINDOWS_BUILDS.get(nums[2])
