"""Compatibility surfaces: other systems' APIs, translated at the edge onto the native domain calls."""
