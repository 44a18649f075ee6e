#!/usr/bin/env python3
"""py-noop is the bench's no-op Python plugin: it takes every message and
returns no action, so `larkway bench` measures delivery alone (the twin of
testdata/noop)."""

import larkway


def new_plugin() -> larkway.Plugin:
    p = larkway.Plugin("py-noop", "1.0.0", description="takes every message, does nothing")

    @p.on_message
    def noop(ev: larkway.Event) -> None:
        return None

    return p


if __name__ == "__main__":
    new_plugin().main()
