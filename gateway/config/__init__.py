"""Configuration: defaults, a TOML file, then command-line flags, in that order of strength.

A leaf of value types: importing it loads no media, transport or UA code and no aiortc
(tests/test_layering.py holds it to that).
"""

from gateway.config.parse import from_mapping, from_toml, parse_trunk
from gateway.config.validate import validate
from gateway.config.values import Config, ConfigError, DialPlan, Trunk, User

__all__ = [
    "Config",
    "ConfigError",
    "DialPlan",
    "Trunk",
    "User",
    "from_mapping",
    "from_toml",
    "parse_trunk",
    "validate",
]
