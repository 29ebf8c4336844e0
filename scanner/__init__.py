"""portproof: confirm the real service behind each port, live or from pcap captures."""

__version__ = "0.1.0"
