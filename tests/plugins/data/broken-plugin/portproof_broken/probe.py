"""A deliberately broken portproof plugin: importing it fails, as a plugin with a bug would."""

from scanner.api import DoesNotExist  # type: ignore[attr-defined]  # noqa: F401  (the bug)
