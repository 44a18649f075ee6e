#!/usr/bin/env python3
"""py-echo is the smallest larkway plugin in Python: it replies to every
message with the message's own text (the Python twin of plugins/echo).

The core launches it with the Python that has the SDK installed, e.g.

    plugins:
      - name: py-echo
        path: .tools/pyenv/bin/python
        args: [plugins/py-echo/main.py]
"""

import sys

try:
    import larkway
except ImportError as e:  # pragma: no cover - a setup error, reported plainly
    sys.stderr.write(f"py-echo: the larkway SDK is not installed for {sys.executable} ({e}); "
                     "install it with `pip install -e sdk/python` or run sdk/python/test.sh\n")
    sys.exit(1)


def new_plugin() -> larkway.Plugin:
    """Separate from main so tests can drive the plugin in-process."""
    p = larkway.Plugin("py-echo", "1.0.0", actions=[larkway.ActionKind.REPLY],
                       description="replies to every message with its own text")

    @p.on_message
    def echo(ev: larkway.Event) -> larkway.Action:
        text = ev.message.text
        if not text:
            text = f"({ev.message.type} message)"
        return larkway.reply_text("echo: " + text)

    return p


if __name__ == "__main__":
    new_plugin().main()
