"""A plugin that raises at import time (the registry must report it and go on)."""

raise RuntimeError("this plugin is broken on purpose")
