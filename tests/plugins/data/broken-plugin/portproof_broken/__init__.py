"""A deliberately broken portproof plugin (tests only)."""
