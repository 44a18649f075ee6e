"""Command parsing: the expected values were produced by the Go rule
(sdk/go/contract.CommandName and sdk/go/larkway.ParseCommand) for the same
inputs, so both SDKs and the core agree on what a command is."""

import pytest

import larkway
from larkway import command_name, parse_command

# input -> None (not a command) or (name, rest, args, flags)
CASES = [
    ("/help", ("/help", "", [], {})),
    ("/Help", ("/help", "", [], {})),
    ("  /help  ", ("/help", "", [], {})),
    ("/deploy prod --force --region=eu", ("/deploy", "prod --force --region=eu", ["prod"], {"force": "true", "region": "eu"})),
    ("@Bot /Deploy prod", ("/deploy", "prod", ["prod"], {})),
    ("@Bot @Other /x a b", ("/x", "a b", ["a", "b"], {})),
    ("@Bot", None),
    ("@Bot   ", None),
    ("@Bot\t/tab arg", ("/tab", "arg", ["arg"], {})),
    ("@Bot\n/nl arg", ("/nl", "arg", ["arg"], {})),
    ("/", None),
    ("/ x", ("/", "x", ["x"], {})),
    ("hello /help", None),
    ("", None),
    ("   ", None),
    ('/say "hello world" again', ("/say", '"hello world" again', ["hello world", "again"], {})),
    ('/say "unterminated quote here', ("/say", '"unterminated quote here', ["unterminated quote here"], {})),
    ('/say "" empty', ("/say", '"" empty', ["", "empty"], {})),
    ('/say a"b c"d', ("/say", 'a"b c"d', ["ab cd"], {})),
    ("/flags -- --=v --k= --a=b=c -x", ("/flags", "-- --=v --k= --a=b=c -x", ["--", "-x"], {"": "v", "a": "b=c", "k": ""})),
    ('/x --k="quoted value"', ("/x", '--k="quoted value"', [], {"k": "quoted value"})),
    # Only a space ends the name (Go: strings.Cut(s, " ")).
    ("/deploy\tprod", ("/deploy\tprod", "", [], {})),
    ("/cmd  two   spaces\tand\ttabs\nnewline", ("/cmd", "two   spaces\tand\ttabs\nnewline", ["two", "spaces", "and", "tabs", "newline"], {})),
    # Go's TrimSpace trims Unicode spaces at the ends only.
    ("\u3000/wide\u3000arg", ("/wide\u3000arg", "", [], {})),
    ("/ÄBC ä", ("/äbc", "ä", ["ä"], {})),
    # Go lowercases rune by rune: İ -> i, and no final sigma.
    ("/\u0130stanbul", ("/istanbul", "", [], {})),
    ("/ΣΑΣ x", ("/σασ", "x", ["x"], {})),
    # U+001C is space to Python's str.strip() but not to Go's TrimSpace.
    ("\x1c/sep", None),
    ("@ /x", ("/x", "", [], {})),
    ("@a@b /y", ("/y", "", [], {})),
    ("/x --FLAG Value", ("/x", "--FLAG Value", ["Value"], {"FLAG": "true"})),
]


@pytest.mark.parametrize("text,want", CASES)
def test_command_name_and_parse(text, want):
    got = command_name(text)
    cmd = parse_command(text)
    if want is None:
        assert got is None
        assert cmd is None
        return
    name, rest, args, flags = want
    assert got == (name, rest)
    assert cmd == larkway.Command(name=name, args=args, flags=flags, rest=rest)


def test_flag_accessor():
    cmd = parse_command("/deploy prod --force --region=eu")
    assert cmd.flag("force") == "true"
    assert cmd.flag("region") == "eu"
    assert cmd.flag("missing") is None
    assert cmd.flag("missing", "dflt") == "dflt"


def test_command_routing_uses_the_same_rule():
    from larkway import testing

    p = larkway.Plugin("cmds", "1.0.0", actions=[larkway.ActionKind.REPLY])
    seen = []

    @p.on_command("/Deploy")  # registered names are matched lowercased
    def deploy(ev, cmd):
        seen.append(cmd)
        return larkway.reply_text("deploying " + " ".join(cmd.args))

    res = testing.run(p, testing.message("@Bot /DEPLOY prod --force", mentions=["Bot"]))
    assert res.outcome == "done"
    assert res.texts == ["deploying prod"]
    assert seen[0].flags == {"force": "true"}
    # An unknown command with only command handlers: done, no actions.
    res = testing.run(p, testing.message("/other"))
    assert res.outcome == "done" and res.actions == []
    assert testing.manifest(p)["subscriptions"][0]["commands"] == ["/deploy"]


@pytest.mark.parametrize("bad", ["deploy", "/", "/two words", ""])
def test_bad_command_names_are_refused(bad):
    p = larkway.Plugin("cmds", "1.0.0")
    with pytest.raises(ValueError):
        p.on_command(bad)
