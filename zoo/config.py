"""Settings that round-trip through JSON (config.json, checkpoints): dataclasses read back strictly."""
from __future__ import annotations

from dataclasses import asdict, fields


class JSONConfig:
    """`to_dict` / `from_dict` for a dataclass. A key the class does not know is an error, not silently
    dropped: a file from another version says so instead of loading into the wrong settings."""

    KIND = "config"   # what the error message calls it

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown {cls.KIND} keys: {', '.join(sorted(unknown))}")
        return cls(**d)
