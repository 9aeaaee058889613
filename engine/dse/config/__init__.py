"""Loading `config.yaml`: YAML with positions, `${VAR}` expansion, schema validation, typed model."""

from .loader import find_config, load_config
from .model import BackendConfig, Config, Endpoint, ManagedSettings, Secret, ToolConfig
from .yaml_source import YamlSource, read_yaml

__all__ = [
    "BackendConfig",
    "Config",
    "Endpoint",
    "ManagedSettings",
    "Secret",
    "ToolConfig",
    "YamlSource",
    "find_config",
    "load_config",
    "read_yaml",
]
