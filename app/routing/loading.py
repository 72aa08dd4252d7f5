"""The initial rule set: a YAML file (ROUTING_RULES_FILE) or the built-in defaults.

Topic names in the file may say `${KAFKA_TOPIC_ATTEMPTS}` (any setting) to use the configured topic.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import TypeAdapter

from app.config.settings import Settings
from app.routing.rules import RoutingRule, default_rules

_SETTING = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
_RULES: TypeAdapter[list[RoutingRule]] = TypeAdapter(list[RoutingRule])


def initial_rules(settings: Settings) -> list[RoutingRule]:
    """Rules from ROUTING_RULES_FILE, or the defaults; raises ValueError naming the problem."""
    if settings.routing_rules_file is None:
        return default_rules(settings)
    path = Path(settings.routing_rules_file)
    if not path.is_file():
        raise ValueError(f"ROUTING_RULES_FILE {path} does not exist")
    text = _SETTING.sub(
        lambda match: str(getattr(settings, match.group(1).lower(), match.group(0))), path.read_text()
    )
    import yaml  # only with a rule file: the parser is ~1 MB of every worker's memory otherwise

    document = yaml.safe_load(text) or {}
    items = document.get("rules", []) if isinstance(document, dict) else document
    return _RULES.validate_python(items)
