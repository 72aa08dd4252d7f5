"""What Kafka accepts as a topic name; checked before a name is used anywhere."""

import re

_LEGAL = re.compile(r"[A-Za-z0-9._-]{1,249}")


def check_topic_name(name: str) -> str:
    """Return `name` if Kafka accepts it as a topic name, else raise ValueError saying why."""
    if not _LEGAL.fullmatch(name) or name in {".", ".."}:
        raise ValueError(
            f"topic {name!r} is not a legal Kafka topic name "
            "(1-249 characters of letters, digits, '.', '_' and '-')"
        )
    return name
