"""A local plugin (for --plugin-path) that raises at import."""

raise ImportError("broken_import.py: a dependency this plugin needs is missing (on purpose)")
