from __future__ import annotations

from dataclasses import dataclass, field

from .contract import command_name


@dataclass
class Command:
    """A parsed message command.

    ``"/deploy prod --force --region=eu"`` gives name ``"/deploy"``, args
    ``["prod"]`` and flags ``{"force": "true", "region": "eu"}``.
    """

    name: str
    args: list[str] = field(default_factory=list)
    flags: dict[str, str] = field(default_factory=dict)
    #: The text after the command name, unparsed.
    rest: str = ""

    def flag(self, name: str, default: str | None = None) -> str | None:
        """A flag's value, or ``default`` when it was not given."""
        return self.flags.get(name, default)


def parse_command(text: str) -> Command | None:
    """Parse a text starting with ``/`` (after leading mentions), or None.

    Words are split on spaces, tabs and newlines; double quotes group words
    (``/say "hello world"``). ``--flag`` sets ``"true"``, ``--k=v`` sets
    ``"v"``; everything else is an argument. Same rule as the Go SDK's
    ``ParseCommand``.
    """
    cut = command_name(text)
    if cut is None:
        return None
    name, rest = cut
    cmd = Command(name=name, rest=rest)
    for w in _split_words(rest):
        if w.startswith("--") and len(w) > 2:
            k, sep, v = w[2:].partition("=")
            cmd.flags[k] = v if sep else "true"
            continue
        cmd.args.append(w)
    return cmd


def _split_words(s: str) -> list[str]:
    out: list[str] = []
    buf: list[str] = []
    in_quote = has = False
    for r in s:
        if r == '"':
            in_quote, has = not in_quote, True
        elif not in_quote and r in " \t\n":
            if has:
                out.append("".join(buf))
                buf.clear()
                has = False
        else:
            buf.append(r)
            has = True
    if has:
        out.append("".join(buf))
    return out
