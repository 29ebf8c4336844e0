"""Built-in probes, one module per protocol (registered through the ``portproof.probes`` entry points).

Nothing under ``probes/`` may import ``asyncio``, ``socket`` or ``ssl``: probes are sans-I/O.
"""
