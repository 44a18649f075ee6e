"""Constants both sides of the plugin protocol agree on.

A Python copy of ``sdk/go/contract``: the go-plugin handshake, the names under
which services are served, and the one rule for what counts as a message
command. Keep it in step with the Go package.
"""

from __future__ import annotations

#: The plugin contract package version (larkway.plugin.v1).
CONTRACT_VERSION = "v1"
#: go-plugin's application protocol version (the handshake's second field).
PROTOCOL_VERSION = 1
#: go-plugin's core protocol version (the handshake's first field).
CORE_PROTOCOL_VERSION = 1
#: The core sets this variable when it launches a plugin; a plugin started any
#: other way refuses to run.
MAGIC_COOKIE_KEY = "LARKWAY_PLUGIN_MAGIC_COOKIE"
MAGIC_COOKIE_VALUE = "d2f1c5b0-larkway-plugin-v1"
#: The key under which the handler service is dispensed.
PLUGIN_NAME = "handler"
#: The gRPC health service name go-plugin checks.
HEALTH_SERVICE_NAME = "plugin"

# Go's unicode.IsSpace, which strings.TrimSpace uses. Python's str.strip()
# also strips U+001C..U+001F, so the set is spelled out.
_GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)


def _go_trim_space(s: str) -> str:
    return s.strip(_GO_SPACE)


def _go_lower(s: str) -> str:
    # Go's strings.ToLower maps rune by rune with the simple case mapping:
    # no final-sigma context and U+0130 becomes a plain "i".
    return "".join("i" if c == "\u0130" else c.lower() for c in s)


def command_name(text: str) -> tuple[str, str] | None:
    """Return ``(name, rest)`` for a message text that is a command, else None.

    ``"@Bot /Deploy prod"`` gives ``("/deploy", "prod")``: leading @mentions
    are skipped and the name is lowercased. The core matches subscriptions and
    the SDKs route handlers with this one rule (Go: ``contract.CommandName``).
    """
    s = _go_trim_space(text)
    while s.startswith("@"):
        idx = [i for i in (s.find(" "), s.find("\t"), s.find("\n")) if i >= 0]
        if not idx:
            return None
        s = _go_trim_space(s[min(idx):])
    if len(s) < 2 or s[0] != "/":
        return None
    name, _, rest = s.partition(" ")
    return _go_lower(_go_trim_space(name)), _go_trim_space(rest)
