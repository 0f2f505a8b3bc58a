"""What MQTT lets a string or a topic name be, for text a guest chose that goes onto the
wire (a result's content type and user properties, a command's topics and user data).

A broker closes the connection of a client that sends anything else (mosquitto: "Malformed
UTF-8" for a user property holding a newline), and the client, resending its unacknowledged
QoS 1 publish on every reconnect, never gets past it: one result would stop the worker for
good. So such text is refused where the guest hands it over, with the reason. The rules are
MQTT 5's for UTF-8 strings (1.5.4: at most 65,535 bytes, no U+0000, no surrogates) and the
characters it says a receiver may refuse, which mosquitto does: control characters
U+0001-U+001F and U+007F-U+009F, and the Unicode non-characters."""
from __future__ import annotations

import re

MAX_STRING_BYTES = 65535
# each code point is at most 4 bytes of UTF-8: a string this long or shorter fits
_SURELY_SHORT = MAX_STRING_BYTES // 4
_REFUSED = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef"
                      + "".join(f"{chr(plane << 16 | 0xFFFE)}{chr(plane << 16 | 0xFFFF)}" for plane in range(17))
                      + "]")


def string_problem(text: str) -> str | None:
    """Why MQTT cannot carry `text` as a string, or None where it can.

    >>> string_problem("application/json") is None
    True
    >>> string_problem("a\\nb")
    'it holds U+000A at index 1 (MQTT strings hold no control characters)'
    """
    # the length first: the search holds the GIL ~40 ms a MiB (a guest's 64 MiB content
    # type had held every other thread 2.5 s)
    if len(text) > _SURELY_SHORT and (n := len(text.encode("utf-8", "surrogatepass"))) > MAX_STRING_BYTES:
        return f"it is {n} bytes of UTF-8; an MQTT string holds at most {MAX_STRING_BYTES}"
    found = _REFUSED.search(text)
    if found is not None:
        code = ord(found.group())
        what = ("no U+0000" if code == 0 else "no surrogates" if 0xD800 <= code <= 0xDFFF
                else "no control characters" if code <= 0x9F else "no Unicode non-characters")
        return f"it holds U+{code:04X} at index {found.start()} (MQTT strings hold {what})"
    return None


def topic_problem(topic: str) -> str | None:
    """Why `topic` cannot be a topic a message is published to (a topic name), or None.

    >>> topic_problem("cmd/+/run")
    "it holds the wildcard '+' (a topic to publish to holds none)"
    """
    if not topic:
        return "it is empty"
    for wildcard in "+#":
        if wildcard in topic:
            return f"it holds the wildcard {wildcard!r} (a topic to publish to holds none)"
    return string_problem(topic)


def filters_pattern(filters) -> re.Pattern:
    """A pattern whose `fullmatch` tells whether any of the topic `filters` matches a
    topic name, by MQTT's rules: `+` is one level, a last `#` this level and all below
    (`a/#` matches `a`), and a filter starting with a wildcard matches no `$` topic.

    >>> p = filters_pattern(["sensors/+/temp", "cmd/#"])
    >>> [bool(p.fullmatch(t)) for t in ("sensors/a/temp", "sensors/a/b/temp", "cmd", "cmd/x/y", "other")]
    [True, False, True, True, False]
    """
    alternatives = []
    for f in filters:
        pattern = ""
        for i, level in enumerate(f.split("/")):
            if level == "#":
                pattern = pattern[:-1] + "(?:/.*)?" if i else ".*"
                break
            pattern += ("[^/]*" if level == "+" else re.escape(level)) + "/"
        else:
            pattern = pattern[:-1]
        alternatives.append(("(?!\\$)" if f[:1] in ("+", "#") else "") + pattern)
    return re.compile("|".join(f"(?:{a})" for a in alternatives) if alternatives else "(?!)", re.DOTALL)


__all__ = ["MAX_STRING_BYTES", "filters_pattern", "string_problem", "topic_problem"]
