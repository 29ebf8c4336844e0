"""Every banner rule of the smtp, imap, pop3 and nntp probes against a real greeting, with its source.

Each case is a greeting a real server sent, copied from where it was seen:
- ``capture:FILE``: tests/data/pcaps-public (see its MANIFEST.tsv),
- ``lab:``: the lab transcripts in tests/probes/data,
- a URL: a vendor document, knowledge-base article, mailing-list post or blog transcript,
- ``repo:OWNER/NAME:PATH``: a protocol library's test fixture recorded from a real server,
- ``codeindex:N``: a public GitHub file (a transcript or a comment quoting a session) found with the
  search tool's exact-string index, id N (the index does not name its repository).
Never another fingerprint project's files.

A test below checks that every row of every probe's banner table has at least one case here, so a
new rule cannot land without a real example.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pytest

from probes import imap, nntp, pop3, smtp
from probes._microsoft import exchange_release, windows_of_service_build
from scanner.api import Finding
from scanner.textproto import BannerRule, decode_text, looks_like_version, match_banner
from tests.pcaputil import server_stream


def identify(protocol: str, banner: str) -> Finding:
    """Run a probe's classifier on a greeting exactly as its dialogue does (greeting only)."""
    if protocol == "smtp":
        return smtp.identify(smtp.parse_reply(banner.encode("utf-8") + b"\r\n"), None)
    if protocol == "imap":
        _, text = imap.parse_greeting(banner.encode("utf-8") + b"\r\n")
        return imap.identify(text, imap.capabilities_from(text), {})
    if protocol == "pop3":
        _, text = pop3.parse_status(banner.encode("utf-8") + b"\r\n")
        return pop3.identify(text, {})
    code, text = nntp.parse_status(banner.encode("utf-8") + b"\r\n")
    return nntp.identify(code, text, {})


@dataclass(frozen=True)
class Case:
    protocol: str
    banner: str
    product: str
    version: str | None
    rule: str
    details: dict[str, Any] = field(default_factory=dict)
    extrainfo: str | None = None
    #: (capture file, server port, server address or None): the banner is that flow's first line
    capture: tuple[str, int, str | None] | None = None


CASES = [
    # ------------------------------------------------------------------ SMTP, Microsoft
    # capture:smtp-exchange2003-on-iis6-smtpsvc-6.0.3790.1830.pcap
    Case("smtp", "220 server-102e9f9.example.int Microsoft ESMTP MAIL Service, Version: 6.0.3790.1830",
         "Microsoft IIS SMTP", "6.0.3790.1830", "iis-smtpsvc-version", {"os": "Windows Server 2003"},
         "Windows Server 2003", ("smtp-exchange2003-on-iis6-smtpsvc-6.0.3790.1830.pcap", 25, None)),
    # https://woodaway.wordpress.com/2005/04/22/ (telnet transcript of a Windows 2000 SMTP service)
    Case("smtp", "220 mySMTPServer Microsoft ESMTP MAIL Service, Version: 5.0.2195.6713 ready at  Wed, 7 Apr 2004 "
         "14:32:17 -0400", "Microsoft IIS SMTP", "5.0.2195.6713", "iis-smtpsvc-version", {"os": "Windows 2000"}),
    # https://www.betaarchive.com/wiki/index.php/Microsoft_KB_Archive/254560 (Microsoft KB 254560,
    # Windows 2000 + Exchange 2000 pre-release build 2172: no OS claimed for an unknown build)
    Case("smtp", "220 smtp01.example.com Microsoft ESMTP MAIL Service, Version: 5.0.2172.1 ready at  Tue, 29 Feb 2000 "
         "18:55:48 -0600", "Microsoft IIS SMTP", "5.0.2172.1", "iis-smtpsvc-version"),
    # codeindex:20477416076 (telnet transcript, Windows Server 2008 R2 SP1 SMTP service)
    Case("smtp", "220 SVR-CM.local.parcit Microsoft ESMTP MAIL Service, Version: 7.5.7601.17514 ready at  Fri, 9 Oct "
         "2015 10:50:42 +0200", "Microsoft IIS SMTP", "7.5.7601.17514", "iis-smtpsvc-version",
         {"os": "Windows Server 2008 R2"}),
    # capture:smtp-exchange-cern-multiaddr.pcap
    Case("smtp", "220 cernmxlb4.cern.ch Microsoft ESMTP MAIL Service ready at Tue, 8 Dec 2015 22:31:02 +0100",
         "Microsoft Exchange Server", None, "exchange-2007-plus-banner", {"exchange_generation": "2007 or later"},
         capture=("smtp-exchange-cern-multiaddr.pcap", 25, None)),
    # https://pastebin.com/Y9kdXfdc (Exchange 2013 SMTP send protocol log, "#Version: 15.0.0.0")
    Case("smtp", "220 EX2.domain.local Microsoft ESMTP MAIL Service ready at Tue, 12 Dec 2017 16:18:04 +0300",
         "Microsoft Exchange Server", None, "exchange-2007-plus-banner"),
    # codeindex:4079515354 (Microsoft support article: "220 Exchange-Server.contoso.comMicrosoft ESMTP ...")
    Case("smtp", "220 Exchange-Server.contoso.comMicrosoft ESMTP MAIL Service ready at Thu, 27 Jun 2013 17:04:17 -0400",
         "Microsoft Exchange Server", None, "exchange-2007-plus-banner"),
    # https://woodaway.wordpress.com/2005/04/22/ (Exchange 5.5 Internet Mail Service)
    Case("smtp", "220 ESMTP Server (Microsoft Exchange Internet Mail Service 5.5.2651.58) ready.",
         "Microsoft Exchange Server", "5.5.2651.58", "exchange-5.5-ims", {"exchange_release": "5.5"}),
    # ------------------------------------------------------------------ SMTP, others
    # capture:smtp-exim-4.94.2-loopback-prdr.pcap
    Case("smtp", "220 tinkyx390 ESMTP Exim 4.94.2 Mon, 27 Mar 2023 17:17:37 +0200", "Exim", "4.94.2", "exim",
         capture=("smtp-exim-4.94.2-loopback-prdr.pcap", 25, None)),
    # capture:smtp-exim-4.69-plus-subethasmtp-dns-tls.pcap
    Case("smtp", "220-xc90.websitewelcome.com ESMTP Exim 4.69 #1 Mon, 05 Oct 2009 01:05:54 -0500", "Exim", "4.69",
         "exim", capture=("smtp-exim-4.69-plus-subethasmtp-dns-tls.pcap", 25, "74.53.140.153")),
    # capture:smtp-sendmail-8.14.9-loginserver.pcap ($v/$Z: binary, then configuration version)
    Case("smtp", "220 tux319.loginserver.ch ESMTP Sendmail 8.14.9/8.12.11; Mon, 29 Jul 2019 19:01:46 +0200",
         "Sendmail", "8.14.9", "sendmail-version", {"sendmail_config_version": "8.12.11"},
         capture=("smtp-sendmail-8.14.9-loginserver.pcap", 25, None)),
    # capture:smtp-sendmail-8.8.7-darpa1999.pcap
    Case("smtp", "220 pigeon.eyrie.af.mil ESMTP Sendmail 8.8.7/8.8.7; Sat, 7 Aug 1999 08:20:11 -0400", "Sendmail",
         "8.8.7", "sendmail-version", capture=("smtp-sendmail-8.8.7-darpa1999.pcap", 25, None)),
    # lab:postfix 3.7.11 (tests/probes/data/smtp-postfix-3.7.11.txt)
    Case("smtp", "220 mail.lab.example.test ESMTP Postfix (Debian/GNU)", "Postfix", None, "postfix",
         extrainfo="Debian/GNU"),
    # capture:smtp-multi-sendmail-communigate-yahoo-postfix465.pcap
    Case("smtp", "220 v02.kerne.org ESMTP Postfix", "Postfix", None, "postfix",
         capture=("smtp-multi-sendmail-communigate-yahoo-postfix465.pcap", 465, "104.131.33.237")),
    Case("smtp", "220 mx01.ingw.orange.tn ESMTP CommuniGate Pro 6.1.16", "CommuniGate Pro", "6.1.16",
         "communigate-pro", capture=("smtp-multi-sendmail-communigate-yahoo-postfix465.pcap", 25, "197.26.11.151")),
    # capture:smtp-emailrelay-2.1a.pcap
    Case("smtp", "220 linuxbox -- E-MailRelay V2.1a -- Service ready", "E-MailRelay", "2.1a", "e-mailrelay",
         capture=("smtp-emailrelay-2.1a.pcap", 25, None)),
    # capture:smtp-exim-4.69-plus-subethasmtp-dns-tls.pcap: the library prints "null" for an unset
    # version; "null" is not a version and is not claimed
    Case("smtp", "220 uprise ESMTP SubEthaSMTP null", "SubEthaSMTP", None, "subethasmtp",
         capture=("smtp-exim-4.69-plus-subethasmtp-dns-tls.pcap", 25, "192.168.133.102")),
    # capture:smtp-google-gsmtp-starttls.pcap
    Case("smtp", "220 mx.google.com ESMTP hf10si4097299icc.190 - gsmtp", "Google gsmtp", None, "google-gsmtp",
         capture=("smtp-google-gsmtp-starttls.pcap", 25, None)),
    # repo:aio-libs/aiosmtpd:aiosmtpd/smtp.py (__ident__ = 'Python SMTP {}'.format(__version__); greeting
    # "220 <hostname> <ident>"), version 1.4.4 from its releases
    Case("smtp", "220 mail.example.org Python SMTP 1.4.4", "aiosmtpd (Python SMTP)", "1.4.4", "aiosmtpd"),
    # codeindex:24964598773 (Chinese SMTP telnet tutorial)
    Case("smtp", "220 bdwater.com ESMTP MDaemon 7.1.2; Tue, 10 Aug 2004 16:59:55 +0800", "MDaemon", "7.1.2", "mdaemon"),
    # codeindex:153037014 (bounce-parser docstring quoting a telnet session) and codeindex:68361941585
    # (German comment with a "typical SMTP session"): IMail's two greeting layouts
    Case("smtp", "220 X1 NT-ESMTP Server 208.24.118.205 (IMail 6.00 45595-15)", "Ipswitch IMail", "6.00", "imail"),
    Case("smtp", "220 winmail-qwmail.de (IMail 8.15 78648-1) NT-ESMTP Server X1", "Ipswitch IMail", "8.15", "imail"),
    # codeindex:6726239308 (Spanish Domino administration guide, telnet transcript)
    Case("smtp", "220 mta ESMTP Service (Lotus Domino Release 9.0.0) ready at Mon, 11 Jul 2011 03:53:30 +0200",
         "IBM Domino", "9.0.0", "domino"),
    # codeindex:30221853905 (a scan report quoting the banner)
    Case("smtp", "220 bluenhub1s.fhlb-pgh.net ESMTP Service (Lotus Domino Release 8.5.3FP1) ready at Mon, 26 Aug "
         "2013 21:02:25 -0400", "IBM Domino", "8.5.3FP1", "domino"),
    # lab:python3.11 smtpd module (Python 3.11.7) (python3 -m smtpd DebuggingServer; 0.3 is smtpd.__version__)
    Case("smtp", "220 localhost Python SMTP proxy version 0.3", "Python smtpd", "0.3", "python-smtpd"),
    # https://github.com/haraka/Haraka/issues/2945 and lab:Haraka 3.3.4 (npm)
    Case("smtp", "220 mailproxy.mydomain.com ESMTP Haraka/2.8.27 ready", "Haraka", "2.8.27", "haraka"),
    Case("smtp", "220 mail.lab.example.test ESMTP Haraka/3.3.4 ready (8BF2B5)", "Haraka", "3.3.4", "haraka"),
    # https://github.com/stalwartlabs/stalwart/issues/774
    Case("smtp", "220 smtp.example.com Stalwart ESMTP at your service", "Stalwart Mail Server", None, "stalwart"),
    # https://github.com/mailhog/MailHog/issues/449
    Case("smtp", "220 mailhog.example ESMTP MailHog", "MailHog", None, "mailhog"),
    # https://github.com/mailcow/mailcow-dockerized/issues/3170 (first line of a multi-line greeting)
    Case("smtp", "220-domain.com ESMTP Postcow", "Postfix (mailcow)", None, "mailcow-postcow"),
    # https://github.com/jstedfast/MailKit/issues/587
    Case("smtp", "220 mail.startp.de VPOP3 ESMTP Server Ready", "PSCS VPOP3", None, "vpop3"),
    # https://github.com/greycodee/blog-comment/issues/22 (smtp.qq.com)
    Case("smtp", "220 newxmesmtplogicsvrsza5.qq.com XMail Esmtp QQ Mail Server.", "Tencent QQ Mail", None, "qq-mail"),
    # https://github.com/jetmore/swaks/issues/15
    Case("smtp", "220 email-smtp.amazonaws.com ESMTP SimpleEmailService-d-UCMGFU8F2 l8rfaVjiaG1V7Lvw7tuo", "Amazon SES",
         None, "amazon-ses"),
    # https://github.com/mludvig/smtp-cli/issues/26 (smtp.eu.mailgun.org:587)
    Case("smtp", "220 Mailgun Influx ready", "Mailgun", None, "mailgun-influx"),
    # capture:smtp-aol-587-submission.pcap (the multi-line greeting, lines joined with CR LF)
    Case("smtp", "220-mtaout-ma02.r1000.mx.aol.com ESMTP MUA/Third Party Client Interface\r\n220-AOL and its "
         "affiliated companies do not\r\n220-authorize the use of its proprietary computers and computer\r\n"
         "220-networks to accept, transmit, or distribute unsolicited bulk\r\n220-e-mail sent from the internet."
         "\r\n220-Effective immediately:\r\n220-AOL may no longer accept connections from IP addresses\r\n"
         "220 which no reverse-DNS (PTR record) assigned.", "AOL Mail", None, "aol-policy-text"),
    # https://github.com/PHPMailer/PHPMailer/issues/283
    Case("smtp", "220 smtp4m.mail.yandex.net ESMTP (Want to use Yandex.Mail for your domain? Visit "
         "http://pdd.yandex.ru)", "Yandex Mail", None, "yandex-mail"),
    # ------------------------------------------------------------------ IMAP, Microsoft
    # capture:imap-exchange-5.5.2650.23.pcap
    Case("imap", "* OK Microsoft Exchange IMAP4rev1 server version 5.5.2650.23 (umr-mail02) ready",
         "Microsoft Exchange Server", "5.5.2650.23", "exchange-5.5-greeting", {"exchange_release": "5.5"},
         capture=("imap-exchange-5.5.2650.23.pcap", 143, None)),
    # codeindex:11089540031 (Nokia/Symbian IMAP client test fixture recorded against Exchange 2000)
    Case("imap", "* OK Microsoft Exchange 2000 IMAP4rev1 server version 6.0.6249.0 "
         "(lon-cn-exchng2k.msexchange2k.closedtest.intra) ready.", "Microsoft Exchange Server", "6.0.6249.0",
         "exchange-2000-2003-greeting", {"exchange_release": "2000"}),
    # https://lukianol.wordpress.com/2011/05/10/imap-via-telnet/
    Case("imap", "* OK Microsoft Exchange Server 2003 IMAP4rev1 server version 6.5.7638.1", "Microsoft Exchange Server",
         "6.5.7638.1", "exchange-2000-2003-greeting", {"exchange_release": "2003"}),
    # issue 13 (the German Exchange 2003 greeting quoted from the real-world banner set; no public
    # page found that shows it, see docs/microsoft-mail.md)
    Case("imap", "* OK Der Microsoft Exchange Server 2003 IMAP4rev1-Server, Version 6.5.7638.1 (host), steht zur "
         "Verfügung.", "Microsoft Exchange Server", "6.5.7638.1", "exchange-2003-greeting-de",
         {"exchange_release": "2003"}),
    # repo:jstedfast/MailKit:UnitTests/Net/Imap/Resources/exchange/greeting-2003.txt (version in parentheses)
    Case("imap", "* OK Microsoft Exchange Server 2003 IMAP4rev1 server version (6.5.7638.1) ready",
         "Microsoft Exchange Server", "6.5.7638.1", "exchange-2000-2003-greeting", {"exchange_release": "2003"}),
    # issue 13 (Exchange 2007 greeting quoted from the real-world banner set)
    Case("imap", "* OK Microsoft Exchange Server 2007 IMAP4 service ready", "Microsoft Exchange Server", "2007",
         "exchange-2007-greeting", {"exchange_release": "2007"}),
    # repo:jstedfast/MailKit:UnitTests/Net/Imap/Resources/exchange/greeting-2007.txt
    Case("imap", "* OK Microsoft Exchange Server 2007 IMAP4 service is ready", "Microsoft Exchange Server", "2007",
         "exchange-2007-greeting", {"exchange_release": "2007"}),
    # https://learn.microsoft.com/en-us/powershell/module/exchange/set-imapsettings (-Banner default)
    Case("imap", "* OK The Microsoft Exchange IMAP4 service is ready.", "Microsoft Exchange Server", None,
         "exchange-2010-plus-greeting", {"exchange_release": "2010 or later"}),
    # repo:jstedfast/MailKit:UnitTests/Net/Imap/Resources/exchange/greeting.txt (Office 365: base64 UTF-16LE name)
    Case("imap", "* OK The Microsoft Exchange IMAP4 service is ready. [TQBXAEgAUABSADIAMQBDAEEAMAAwADYAMAAuAG4AYQBtAHAA"
         "cgBkADIAMQAuAHAAcgBvAGQALgBvAHUAdABsAG8AbwBrAC4AYwBvAG0A]", "Microsoft Exchange Server", None,
         "exchange-2013-plus-greeting-token",
         {"exchange_release": "2013 or later", "server_name": "MWHPR21CA0060.namprd21.prod.outlook.com"}),
    # ------------------------------------------------------------------ IMAP, others
    # lab:dovecot 2.3.19.1 and repo:jstedfast/MailKit:UnitTests/Net/Imap/Resources/dovecot/greeting.txt
    Case("imap", "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS AUTH=PLAIN "
         "AUTH=LOGIN] Dovecot (Debian) ready.", "Dovecot", None, "dovecot", extrainfo="Debian"),
    Case("imap", "* OK [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR LOGIN-REFERRALS ID ENABLE IDLE AUTH=PLAIN "
         "AUTH=DIGEST-MD5 AUTH=CRAM-MD5 AUTH=NTLM] Dovecot ready.", "Dovecot", None, "dovecot"),
    # repo:jstedfast/MailKit:UnitTests/Net/Imap/Resources/cyrus/greeting.txt
    Case("imap", "* OK [CAPABILITY IMAP4 IMAP4rev1 LITERAL+ ID STARTTLS AUTH=PLAIN SASL-IR] imap.ecs.soton.ac.uk Cyrus "
         "IMAP v2.3.13-Invoca-RPM-2.3.13-1.0.JKF server ready", "Cyrus IMAP", "2.3.13", "cyrus"),
    # http://wiki.linuxquestions.org/wiki/Testing_IMAP_via_telnet (SUSE 10.3)
    Case("imap", "* OK [CAPABILITY IMAP4 IMAP4rev1 LITERAL+ ID AUTH=DIGEST-MD5 AUTH=CRAM-MD5 SASL-IR] tweedleburg "
         "Cyrus IMAP4 v2.3.8 server ready", "Cyrus IMAP", "2.3.8", "cyrus"),
    # http://www.oreilly.com/catalog/9780596000127/toc.html (tcpflow of Cyrus IMAP4 1.5.19)
    Case("imap", "* OK Server Cyrus IMAP4 v1.5.19 server ready", "Cyrus IMAP", "1.5.19", "cyrus"),
    # repo:jstedfast/MailKit:UnitTests/Net/Imap/Resources/courier/greeting.txt
    Case("imap", "* OK [CAPABILITY IMAP4rev1 UIDPLUS CHILDREN NAMESPACE THREAD=ORDEREDSUBJECT THREAD=REFERENCES SORT "
         "QUOTA IDLE ACL ACL2=UNION STARTTLS] Courier-IMAP ready. Copyright 1998-2011 Double Precision, Inc.  See "
         "COPYING for distribution information.", "Courier-IMAP", None, "courier-imap"),
    # repo:jstedfast/MailKit:UnitTests/Net/Imap/Resources/gmail/greeting.txt
    Case("imap", "* OK Gimap ready for requests from 127.0.0.1 i9if7359725qay.199", "Google Gmail IMAP", None,
         "gmail-gimap"),
    # capture:imap-1and1-gmx-starttls.pcap
    Case("imap", "* OK [CAPABILITY IMAP4rev1 CHILDREN ENABLE ID IDLE LIST-EXTENDED LIST-STATUS LITERAL+ MOVE NAMESPACE "
         "SASL-IR SORT SPECIAL-USE THREAD=ORDEREDSUBJECT UIDPLUS UNSELECT WITHIN STARTTLS AUTH=LOGIN AUTH=PLAIN] "
         "IMAP server ready H migmx013 104568 IMAP-0M0Unb-1YwIOs2b5K-00uE1x", "1&1 / United Internet mail platform",
         None, "1and1-platform", capture=("imap-1and1-gmx-starttls.pcap", 143, None)),
    # repo:jstedfast/MailKit:UnitTests/Net/Imap/Resources/domino/greeting.txt
    Case("imap", "* OK Domino IMAP4 Server Release 9.0.1FP9 ready Fri, 14 Dec 2018 08:38:25 +0100", "IBM Domino",
         "9.0.1FP9", "domino"),
    # repo:jstedfast/MailKit:UnitTests/Net/Imap/Resources/smartermail/greeting.txt
    Case("imap", "* OK IMAP4rev1 SmarterMail", "SmarterMail", None, "smartermail"),
    # https://github.com/zetacomponents/Mail/issues/97 (imap.zoho.com.au)
    Case("imap", "* OK svwall.zoho.com IMAP4 Server (Zoho Mail IMAP4rev1 Server version 1.0)", "Zoho Mail", "1.0",
         "zoho-mail"),
    # repo:jstedfast/MailKit:UnitTests/Net/Imap/Resources/yandex/greeting.txt
    Case("imap", "* OK Yandex IMAP4rev1 at mail-imap-production-171.sas.yp-c.yandex.net:993 ready to talk with "
         "::ffff:91.77.169.5:50580, 2024-Feb-13 08:17:42, gHfsEJKZ3Gk0", "Yandex Mail", None, "yandex-mail"),
    # https://github.com/jstedfast/MailKit/issues/1954 (imap.seznam.cz)
    Case("imap", "* OK Seznam IMAP server ready", "Seznam Email", None, "seznam"),
    # https://github.com/nextcloud/mail/issues/3407 (Xeams mail server log)
    Case("imap", "* OK Synametrics IMAP4rev1 server ready 7/31/20 10:58 AM", "Synametrics Xeams", None,
         "synametrics-xeams"),
    # lab:perdition 2.2-3.2+b1 (tests/data/banners/imap.tsv: run on loopback from the Debian 12 package)
    Case("imap", "* OK [CAPABILITY IMAP4 IMAP4REV1] perdition ready on 127.0.0.9 0002e214", "perdition", None,
         "perdition"),
    # https://github.com/stalwartlabs/stalwart/issues/1231
    Case("imap", "* OK [CAPABILITY IMAP4rev2 IMAP4rev1 ENABLE SASL-IR LITERAL+ ID UTF8=ACCEPT AUTH=OAUTHBEARER "
         "AUTH=PLAIN] Stalwart IMAP4rev2 at your service.", "Stalwart Mail Server", None, "stalwart"),
    # lab:python3-twisted 22.4.0-4+deb12u1 (twisted.mail.imap4.IMAP4Server default greeting)
    Case("imap", "* OK [CAPABILITY IMAP4rev1 NAMESPACE IDLE] Twisted IMAP4rev1 Ready", "Twisted IMAP", None,
         "twisted"),
    # lab:hoodiecrow-imap 2.1.0 (npm)
    Case("imap", "* OK Hoodiecrow ready for rumble", "Hoodiecrow", None, "hoodiecrow"),
    # repo:IndySockets/Indy:Lib/Protocols/IdReplyIMAP4.pas@1b1956be36bb9b1f6f7e894aa66dec601b703ca7
    Case("imap", "* OK CommuniGate Pro IMAP Server 3.5.7 ready", "CommuniGate Pro", "3.5.7", "communigate-pro"),
    # https://github.com/MailCore/mailcore2/issues/1036 (imap.163.com)
    Case("imap", "* OK Coremail System IMap Server Ready(163com[726cd87d72d896a1ac393507346040fa])", "Coremail", None,
         "coremail"),
    # https://github.com/Enough-Software/enough_mail/issues/159 (imap.qq.com) and
    # https://github.com/jstedfast/MailKit/issues/1241 (imap.exmail.qq.com)
    Case("imap", "* OK [CAPABILITY IMAP4 IMAP4rev1 ID AUTH=PLAIN AUTH=LOGIN AUTH=XOAUTH2 NAMESPACE] QQMail "
         "XMIMAP4Server ready", "Tencent QQ Mail", None, "qq-mail"),
    Case("imap", "* OK [CAPABILITY IMAP4 IMAP4rev1 ID AUTH=PLAIN AUTH=LOGIN NAMESPACE] QQMail IMAP4Server ready",
         "Tencent QQ Mail", None, "qq-mail"),
    # ------------------------------------------------------------------ POP3, Microsoft
    # https://library.thedatadungeon.com/msdn-1998-06/kb/Source/exchange/q161118.content.htm (KB Q161118, Exchange 5.0)
    Case("pop3", "+OK Microsoft Exchange POP3 server version 5.0.1457.10 ready", "Microsoft Exchange Server",
         "5.0.1457.10", "exchange-5.x-greeting", {"exchange_release": "5.0"}),
    # codeindex:16215281173 (Microsoft KB text, Exchange 5.5 POP3 "-ERR Unspecified error")
    Case("pop3", "+OK Microsoft Exchange POP3 server version 5.5.2655.20 ready", "Microsoft Exchange Server",
         "5.5.2655.20", "exchange-5.x-greeting", {"exchange_release": "5.5"}),
    # codeindex:31337631438 (script comment quoting a telnet session to Exchange 2000 RTM)
    Case("pop3", "+OK Microsoft Exchange 2000 POP3 server version 6.0.4417.0 (server.domain) ready.",
         "Microsoft Exchange Server", "6.0.4417.0", "exchange-2000-2003-greeting", {"exchange_release": "2000"}),
    # https://techgenix.com/telnet-exchange2003-pop3-smtp-troubleshooting/ (London.nwtraders.msft, 6.5.7226.0)
    Case("pop3", "+OK Microsoft Exchange Server 2003 POP3 server version 6.5.7226.0 (London.nwtraders.msft) ready.",
         "Microsoft Exchange Server", "6.5.7226.0", "exchange-2000-2003-greeting", {"exchange_release": "2003"}),
    # codeindex:16440377444 (a monitoring script that greps this exact greeting) and issue 13
    Case("pop3", "+OK Microsoft Exchange Server 2007 POP3 service ready", "Microsoft Exchange Server", "2007",
         "exchange-2007-greeting", {"exchange_release": "2007"}),
    # https://learn.microsoft.com/en-us/powershell/module/exchange/set-popsettings (-Banner default)
    Case("pop3", "+OK The Microsoft Exchange POP3 service is ready.", "Microsoft Exchange Server", None,
         "exchange-2010-plus-greeting", {"exchange_release": "2010 or later"}),
    # repo:jstedfast/MailKit:UnitTests/Net/Pop3/Resources/exchange/greeting.txt (admin-prefixed banner)
    Case("pop3", "+OK The *WGS* Microsoft Exchange POP3 service is ready.", "Microsoft Exchange Server", None,
         "exchange-2010-plus-greeting"),
    # codeindex:22142810638 (Network Monitor trace of a Windows Server 2003 POP3 service, technologytoolbox.com)
    Case("pop3", "+OK Microsoft Windows POP3 Service Version 1.0 <846424703@banshee.corp.technologytoolbox.com> ready.",
         "Microsoft Windows POP3 Service", "1.0", "windows-pop3-service"),
    # ------------------------------------------------------------------ POP3, others
    # lab:dovecot 2.3.19.1
    Case("pop3", "+OK Dovecot (Debian) ready.", "Dovecot", None, "dovecot", extrainfo="Debian"),
    # https://github.com/jstedfast/MailKit/issues/156 (host anonymised by the reporter)
    Case("pop3", "+OK yxz.yxz.yxz Cyrus POP3 v2.4.16-Debian-2.4.16-4+deb7u2 server ready "
         "<11461268568888226136.1425393580@yxz.yxz.yxz>", "Cyrus POP3", "2.4.16", "cyrus"),
    # https://github.com/jstedfast/MailKit/issues/987
    Case("pop3", "+OK Welcome to MailEnable POP3 Server", "MailEnable", None, "mailenable"),
    # http://openlab.jp/fumio/mailutl3/docs/flow-diagram.txt
    Case("pop3", "+OK JPOP server ready (jpop39) <1043272.1173961152724@ActualPOP3Server>", "JPOP", None, "jpop"),
    # lab:perdition 2.2-3.2+b1 (the "perditon" typo is in the real greeting)
    Case("pop3", "+OK POP3 perditon ready on 127.0.0.9 0002e0a7", "perdition", None, "perdition"),
    # codeindex:56761958405 (tcpdump of a POP3 session) and codeindex:3810304 ("pop.colby.edu")
    Case("pop3", "+OK Qpopper (version 4.0.5) at ns.aeronetworks.ca starting.", "Qpopper", "4.0.5", "qpopper"),
    Case("pop3", "+OK Qpopper (version 4.0.5) at basalt starting.", "Qpopper", "4.0.5", "qpopper"),
    # capture:pop3-cmailserver-5.2.pcap (GBK bytes before the name, shown as decode_text shows them)
    Case("pop3", b"+OK \xd3\xca\xbc\xfe\xb7\xfe\xce\xf1\xc6\xf7 CMailServer 5.2 POP3 Service Ready".decode("latin-1"),
         "CMailServer", "5.2", "cmailserver", capture=("pop3-cmailserver-5.2.pcap", 110, None)),
    # capture:pop3-1and1-mailcom-mieueus-large.pcap
    Case("pop3", "+OK POP server ready H mieueus020 1Mw7UO-1j88qA02mS-00sOH0", "1&1 / United Internet mail platform",
         None, "1and1-platform", capture=("pop3-1and1-mailcom-mieueus-large.pcap", 110, None)),
    # capture:pop3-lavabit-lavad-4.3.0-stls.pcap
    Case("pop3", "+OK lavad", "lavad", None, "lavad", capture=("pop3-lavabit-lavad-4.3.0-stls.pcap", 110, None)),
    # repo:jstedfast/MailKit:UnitTests/Net/Pop3/Resources/gmail/greeting.txt
    Case("pop3", "+OK Gpop ready for requests from 24.91.170.86 hv19mb95710270qab", "Google Gmail POP3", None,
         "gmail-gpop"),
    # https://github.com/neomutt/neomutt/issues/1427 (Verizon: JPOP behind a front end's words)
    Case("pop3", "+OK Maildrop ready, (JPOP server ready).", "JPOP", None, "jpop"),
    # https://github.com/curl/curl/issues/3278
    Case("pop3", "+OK E.Novation POP3 server ready <a.b.c>", "E.Novation mail server", None, "e-novation"),
    # http://ansaurus.com/question/1175846-how-to-interpret-unprintable-characters-in-the-timestamp-sent-by-the-lotus-notes-pop3-server
    # ("X2.0" is the POP3 task's mark, not a release, and does not look like a version)
    Case("pop3", "+OK Lotus Notes POP3 server version X2.0 ready <PrintableCharacters.UnprintableCharacters>",
         "IBM Domino", None, "lotus-notes"),
    # https://github.com/neomutt/neomutt/issues/2707 (poppy.mailsac.com)
    Case("pop3", "+OK POPgun POP3 server ready", "POPgun", None, "popgun"),
    # repo:stalwartlabs/mail-server:crates/pop3/src/lib.rs@3cb1d4682336e8f6660f4eb19ba87c8fe8abf81b
    Case("pop3", "+OK Stalwart POP3 at your service.", "Stalwart Mail Server", None, "stalwart"),
    # repo:Dust-Mail/async-pop:src/test.rs@342a13fe7005e578c5c2ecb9b09f3b7a3d7a01f3
    Case("pop3", "+OK POP3 GreenMail Server v1.6.12 ready", "GreenMail", "1.6.12", "greenmail"),
    # repo:inbucket/inbucket:doc/config.md@e6e4e0987d6950312b7a5ad53596e414702e6630
    Case("pop3", "+OK Inbucket POP3 server ready <26641.1522000423@domain>", "Inbucket", None, "inbucket"),
    # repo:jeffpar/kbarchive:kb/165/Q165738/README.md@9d07a0fcc690dab7a3f5416a3054f4562d804b69 (KB Q165738)
    Case("pop3", "+OK Welcome to NT Example POP3 server.", "Windows NT Resource Kit MailSrv", None,
         "nt-mailsrv-example"),
    # ------------------------------------------------------------------ NNTP
    # lab:inn 2.7.1 (tests/probes/data/nntp-inn-2.7.1.txt)
    Case("nntp", "200 news.lab.example.test InterNetNews NNRP server INN 2.7.1 ready (posting ok)",
         "InterNetNews (INN)", "2.7.1", "inn"),
    # https://subscription.packtpub.com/book/cloud_and_networking/9781904811718/16/ch16lvl1sec06/16-2-nntp-protocol
    Case("nntp", "200 news.provider.com InterNetNews NNRP server INN 2.4.1 ready (posting ok).", "InterNetNews (INN)",
         "2.4.1", "inn"),
    # capture:nntp-leafnode-1.11.7rc1.pcap
    Case("nntp", "200 Leafnode NNTP Daemon, version 1.11.7.rc1 running at datacenter.viste-family.net (my fqdn: "
         "datacenter.viste-family.net)", "Leafnode", "1.11.7.rc1", "leafnode",
         capture=("nntp-leafnode-1.11.7rc1.pcap", 119, None)),
    # lab:sn 0.3.8-12 (tests/data/banners/nntp.tsv: snntpd run on loopback from the Debian 12 package)
    Case("nntp", "201 Hi, you can't post (sn version 0.3.8)", "sn", "0.3.8", "sn"),
    # http://unifiedpeople.ru/exadmin_sp2.en/clntsup_htm/nntp_5t_telnet.htm (Exchange 2000 SP2 help: the
    # Microsoft NNTP Service greeting, IIS 4 generation)
    Case("nntp", "200 NNTP Service Microsoft Internet Services 5.5 Version: 5.5.1717.0 Posting Allowed",
         "Microsoft IIS NNTP", "5.5.1717.0", "iis-nntp-internet-services",
         {"os": "Windows NT 4.0 (IIS 4.0, NT 4.0 Option Pack)"}),
    # issue 13 (the registered sign written out)
    Case("nntp", "200 NNTP Service Microsoft(R) Internet Services 5.5 Version: 5.5.1726.0 Posting Allowed",
         "Microsoft IIS NNTP", "5.5.1726.0", "iis-nntp-internet-services"),
    # codeindex:28391200703 (C# newsreader comment quoting a Windows Server 2003 NNTP service)
    Case("nntp", "200 NNTP Service 6.0.3790.206 Version: 6.0.3790.206 Posting Allowed", "Microsoft IIS NNTP",
         "6.0.3790.206", "iis-nntp-version", {"os": "Windows Server 2003"}, "Windows Server 2003"),
    # lab:cyrus-nntpd 3.6.1-4+deb12u5 (serverinfo: on)
    Case("nntp", "200 mail.portproof-lab.org Cyrus NNTP 3.6.1-Debian-3.6.1-4+deb12u5 server ready, posting allowed",
         "Cyrus NNTP", "3.6.1", "cyrus"),
    # lab:jamnntpd 1.3-1
    Case("nntp", "200 Welcome to JamNNTPd/Linux 1.3 (posting may or may not be allowed, try your luck)", "JamNNTPd",
         "1.3", "jamnntpd"),
    # lab:ginzicut 1.4 (PyPI) (the greeting carries the program's own __version__ 1.0)
    Case("nntp", "201 127.0.0.9 Ginzicut 1.0 server ready (no posting allowed)", "Ginzicut", "1.0", "ginzicut"),
]

_TABLES: dict[str, list[BannerRule]] = {
    "smtp": smtp._BANNERS, "imap": imap._BANNERS, "pop3": pop3._BANNERS, "nntp": nntp._BANNERS,
}


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.protocol}-{c.rule}-{c.banner[:40]}")
def test_rule_names_real_greeting(case: Case) -> None:
    f = identify(case.protocol, case.banner)
    assert (f.product, f.version) == (case.product, case.version), f.evidence
    assert f.rule == f"portproof:{case.protocol}/{case.rule}"
    assert f.confidence == 10
    for key, value in case.details.items():
        assert f.details.get(key) == value, key
    if case.extrainfo is not None:
        assert f.extrainfo == case.extrainfo


@pytest.mark.parametrize("case", [c for c in CASES if c.capture], ids=lambda c: c.capture[0] if c.capture else "")
def test_capture_banners_are_copied_exactly(case: Case) -> None:
    assert case.capture is not None
    name, port, server = case.capture
    first = server_stream(name, port, server).split(b"\n", 1)[0]
    assert decode_text(first).rstrip() == case.banner


@pytest.mark.parametrize("protocol", sorted(_TABLES))
def test_every_rule_has_a_real_example(protocol: str) -> None:
    tested = {c.rule for c in CASES if c.protocol == protocol}
    ids = [r.rule_id for r in _TABLES[protocol]]
    assert len(ids) == len(set(ids)), "rule ids must be unique"
    assert set(ids) <= tested, f"rules without a real example: {sorted(set(ids) - tested)}"
    for r in _TABLES[protocol]:
        assert re.fullmatch(r"[a-z0-9][a-z0-9.\-]*", r.rule_id), r.rule_id


# ---------------------------------------------------------------- EHLO keywords (Exchange generations)
def _smtp(greeting: str, ehlo_lines: list[str]) -> Finding:
    reply = smtp.parse_reply(("\r\n".join(f"250-{ln}" for ln in ehlo_lines[:-1]) + ("\r\n" if ehlo_lines[1:] else "")
                              + f"250 {ehlo_lines[-1]}\r\n").encode())
    return smtp.identify(smtp.parse_reply(greeting.encode() + b"\r\n"), smtp.parse_ehlo(reply))


# the EHLO list Exchange 2000/2003 adds to the Windows SMTP service (Microsoft KB text quoted at
# http://linux.ittoolbox.com/groups/technical-functional/linuxadmin-l/sendmail-check-rulesets-1938880)
_E2K3_EHLO = ["ServerName.example.com Hello [192.0.2.1]", "TURN", "ATRN", "SIZE", "ETRN", "PIPELINING", "DSN",
              "ENHANCEDSTATUSCODES", "8bitmime", "BINARYMIME", "CHUNKING", "VRFY", "X-EXPS GSSAPI NTLM LOGIN",
              "X-EXPS=LOGIN", "AUTH GSSAPI NTLM LOGIN", "AUTH=LOGIN", "X-LINK2STATE", "XEXCH50", "OK"]


def test_exchange_2003_on_windows_2003_smtp_service() -> None:
    f = _smtp("220 mail.example.com Microsoft ESMTP MAIL Service, Version: 6.0.3790.3959 ready at  "
              "Mon, 1 Mar 2010 10:00:00 +0100", _E2K3_EHLO)
    assert (f.product, f.version) == ("Microsoft Exchange Server", "2000/2003")
    # Exchange 2000 does not run on Windows Server 2003 (technet bb124788): only 2003 is left
    assert f.details["exchange_release"] == "2003" and f.details["os"] == "Windows Server 2003"
    assert f.details["smtpsvc_version"] == "6.0.3790.3959" and f.details["link_state"] is True
    assert f.rule == "portproof:smtp/exchange-2003-on-windows-2003-smtpsvc"


def test_exchange_2000_2003_on_windows_2000_stays_open() -> None:
    f = _smtp("220 mySMTPServer Microsoft ESMTP MAIL Service, Version: 5.0.2195.6713 ready at  Wed, 7 Apr 2004 "
              "14:32:17 -0400", _E2K3_EHLO)
    assert (f.product, f.version) == ("Microsoft Exchange Server", "2000/2003")
    assert "exchange_release" not in f.details and f.details["os"] == "Windows 2000"
    assert f.rule == "portproof:smtp/exchange-2000-2003-ehlo-keywords"


def test_exchange_2013_ehlo_keywords() -> None:
    # codeindex:4079515354 (Microsoft support article, Exchange 2013 transport in maintenance mode)
    ehlo = ["Exchange-Server.contoso.com Hello [fe80::2174:c9da:4ac0:74c2%13]", "SIZE", "PIPELINING", "DSN",
            "ENHANCEDSTATUSCODES", "STARTTLS", "X-ANONYMOUSTLS", "AUTH NTLM", "X-EXPS GSSAPI NTLM", "8BITMIME",
            "BINARYMIME", "CHUNKING", "XEXCH50", "XRDST", "XSHADOWREQUEST"]
    f = _smtp("220 Exchange-Server.contoso.comMicrosoft ESMTP MAIL Service ready at Thu, 27 Jun 2013 17:04:17 -0400",
              ehlo)
    assert (f.product, f.version) == ("Microsoft Exchange Server", "2013 or later")
    assert f.rule == "portproof:smtp/exchange-2013-plus-ehlo-keywords"


def test_exchange_2007_ehlo_keywords_behind_custom_banner() -> None:
    # an Exchange 2007+ receive connector with a custom banner: X-ANONYMOUSTLS decides
    f = _smtp("220 mx.example.com ESMTP", ["mx.example.com Hello", "STARTTLS", "X-ANONYMOUSTLS", "AUTH NTLM"])
    assert (f.product, f.version) == ("Microsoft Exchange Server", "2007 or later")
    assert f.rule == "portproof:smtp/exchange-2007-plus-ehlo-keywords"


def test_xexch50_alone_names_exchange_without_generation() -> None:
    # 2007+ also offers XEXCH50 (see the 2013 transcript above); behind a custom banner and without
    # X-LINK2STATE or a 2007+ keyword the generation is not shown
    f = _smtp("220 mx.example.com ESMTP", ["mx.example.com Hello", "X-EXPS GSSAPI NTLM", "AUTH NTLM", "XEXCH50"])
    assert (f.product, f.version) == ("Microsoft Exchange Server", None)
    assert "exchange_generation" not in f.details and f.rule == "portproof:smtp/exchange-xexch50"


def test_x_exps_alone_is_evidence_only() -> None:
    f = _smtp("220 mx.example.com ESMTP", ["mx.example.com Hello", "X-EXPS GSSAPI NTLM", "AUTH NTLM"])
    assert (f.product, f.version, f.rule) == (None, None, None)
    assert any(e.source == "EHLO" and "X-EXPS" in e.value for e in f.evidence)


# ---------------------------------------------------------------- versions must look like versions
@pytest.mark.parametrize(
    ("protocol", "banner"),
    [
        ("smtp", "220 mail.example.com Exim ready"),
        ("smtp", "220 mail.example.com Sendmail ready"),
        ("smtp", "220 mail.example.com ESMTP MDaemon ready"),
        ("smtp", "220 mail.example.com Microsoft ESMTP MAIL Service, Version: ready"),
        ("imap", "* OK mail.example.com Cyrus IMAP ready"),
        ("pop3", "+OK Qpopper ready"),
        ("nntp", "200 news.example.com InterNetNews server INN ready"),
    ],
)
def test_no_word_is_a_version(protocol: str, banner: str) -> None:
    f = identify(protocol, banner)
    assert f.version is None or looks_like_version(f.version)
    assert f.version != "ready"


@pytest.mark.parametrize(
    ("impl", "product", "version"),
    [
        ("POP3v3.0", None, None),  # was product "POP" through the [ -_/] range
        ("Qpopper4.1.0", None, None),  # was "Qpopper4" / "1.0"
        ("trinity", None, None),  # a bare word names no version and is kept as evidence only
        ("lavad 4.3.0", "lavad", "4.3.0"),  # capture:pop3-lavabit-lavad-4.3.0-stls.pcap
        ("Shlemazle-Plotz-v302", None, None),  # RFC 2449's example: "v302" is not dotted
        ("POP3 server 1.0", None, None),  # generic words
    ],
)
def test_pop3_implementation(impl: str, product: str | None, version: str | None) -> None:
    f = pop3.identify("POP3 ready", {"IMPLEMENTATION": impl})
    assert (f.product, f.version) == (product, version)
    assert f.details["implementation"] == impl
    assert (f.rule is None) == (product is None)


def test_pop3_implementation_only_completes_the_same_product() -> None:
    f = pop3.identify("lavad", {"IMPLEMENTATION": "lavad 4.3.0"})
    assert (f.product, f.version, f.rule) == ("lavad", "4.3.0", "portproof:pop3/lavad")
    other = pop3.identify("Dovecot ready.", {"IMPLEMENTATION": "Cyrus POP3 v2.3.16"})
    assert (other.product, other.version) == ("Dovecot", None)


def test_nntp_implementation() -> None:
    f = nntp.identify(200, "news.example.com ready", {"IMPLEMENTATION": "INN 2.7.1"})
    assert (f.product, f.version, f.rule) == ("InterNetNews (INN)", "2.7.1", "portproof:nntp/inn-implementation")
    bare = nntp.identify(200, "news.example.com ready", {"IMPLEMENTATION": "Some News Server"})
    assert (bare.product, bare.rule) == (None, None) and bare.details["implementation"] == "Some News Server"


def test_imap_id_names_the_product_with_its_rule() -> None:
    f = imap.identify("Server ready", [], {"name": "Dovecot", "version": "ready"})
    assert (f.product, f.version, f.rule) == ("Dovecot", None, "portproof:imap/rfc2971-id-name")


def test_match_banner_records_the_rule_and_rejects_non_versions() -> None:
    rules = [BannerRule("thing", re.compile(r"Thing (\S+)"), "Thing", 1)]
    f = Finding(service="x")
    assert match_banner(rules, "Thing null", f, "x") is not None
    assert (f.product, f.version, f.rule, f.confidence) == ("Thing", None, "portproof:x/thing", 10)
    g = Finding(service="x")
    assert match_banner(rules, "Other 1.0", g, "x") is None and (g.product, g.rule) == (None, None)


@pytest.mark.parametrize(
    ("build", "release"),
    [("5.5.2650.23", "5.5"), ("6.0.6249.0", "2000"), ("6.5.7638.1", "2003"), ("8.3.83.6", "2007"),
     ("14.3.123.4", "2010"), ("15.0.1497.2", "2013"), ("15.1.2507.6", "2016"), ("15.2.1118.7", "2019"),
     ("6.0.3790.1830", "2000"), ("x.y", None), ("99.1.1", None)],
)
def test_exchange_release_map(build: str, release: str | None) -> None:
    # 6.0.3790.1830 is a Windows service build: mapping it as an Exchange build would say "2000";
    # the probes only ever call exchange_release on Exchange builds
    assert exchange_release(build) == release


def test_windows_service_build_map() -> None:
    assert windows_of_service_build("5.0.2195.6713") == "Windows 2000"
    assert windows_of_service_build("6.0.3790.1830") == "Windows Server 2003"
    assert windows_of_service_build("5.5.1877.197.19") == "Windows NT 4.0 (IIS 4.0, NT 4.0 Option Pack)"
    assert windows_of_service_build("5.0.2172.1") is None and windows_of_service_build("junk") is None
