#!/usr/bin/env python3
"""The conformance suite's Python test plugin, built only on sdk/python: the
twin of ../goplugin/main.go, case for case. The suite runs the same cases
against both through a real core."""

import json
import sys
import time

try:
    import larkway
except ImportError as e:  # pragma: no cover - a setup error, reported plainly
    sys.stderr.write(f"pyplugin: the larkway SDK is not installed for {sys.executable} ({e}); "
                     "run sdk/python/test.sh (or make test)\n")
    sys.exit(1)

p = larkway.Plugin("conf-py", "1.0.0", description="conformance test plugin (Python)",
                   actions=[larkway.ActionKind.REPLY, larkway.ActionKind.UPDATE_CARD])


# Event in → actions out (and the large payload): echo the text.
@p.on_message
def echo(ev: larkway.Event):
    return larkway.reply_text("echo: " + ev.message.text)


# Command parsing: reply with what the SDK parsed.
@p.on_command("/deploy")
def deploy(ev: larkway.Event, cmd: larkway.Command):
    return larkway.reply_text(json.dumps({"name": cmd.name, "args": list(cmd.args), "flags": dict(cmd.flags),
                                          "rest": cmd.rest}, ensure_ascii=False, separators=(",", ":")))


# Card callback: post a card; a click gets a toast.
@p.on_command("/card")
def card(ev: larkway.Event, cmd: larkway.Command):
    return larkway.reply("interactive", {"config": {"update_multi": True}, "elements": [
        {"tag": "action", "actions": [{"tag": "button", "text": {"tag": "plain_text", "content": "Poke"},
                                       "value": {"action": "poke"}}]}]})


@p.on_card_action
def poke(ev: larkway.Event):
    v = ev.card_action.value
    if not isinstance(v, dict) or v.get("action") != "poke":
        return larkway.CardResponse(toast="unexpected value " + ev.card_action.value_json, toast_type="error")
    return larkway.CardResponse(toast="poked by " + ev.card_action.operator.open_id, toast_type="success")


# Retry result: attempt 1 asks for a retry, attempt 2 succeeds.
@p.on_command("/flaky")
def flaky(ev: larkway.Event, cmd: larkway.Command):
    if ev.attempt < 2:
        raise larkway.RetryAfter(0.1, f"flaky: failing attempt {ev.attempt}")
    return larkway.reply_text(f"flaky: ok on attempt {ev.attempt}")


# Deadline exceeded: attempt 1 overruns its deadline, ignoring it (a sync
# handler's thread cannot be stopped; its late result must be dropped);
# attempt 2 answers at once.
@p.on_command("/slow")
def slow(ev: larkway.Event, cmd: larkway.Command):
    if ev.attempt < 2:
        time.sleep(max(ev.time_left() or 0, 0) + 1.5)
        p.log.info("slow: late attempt finished", attempt=ev.attempt)
        return larkway.reply_text(f"slow: late attempt {ev.attempt}")
    return larkway.reply_text(f"slow: ok on attempt {ev.attempt}")


# State round trip: a per-chat counter, incremented with compare-and-swap.
@p.on_command("/count")
def count(ev: larkway.Event, cmd: larkway.Command):
    key = "count:" + ev.chat_id
    for _ in range(10):
        e = p.state.get(key)
        n = int(e.value) + 1 if e else 1
        swapped, _ = p.state.compare_and_swap(key, e.revision if e else 0, str(n))
        if swapped:
            return larkway.reply_text(f"count: {n}")
    raise RuntimeError("state store contended")


if __name__ == "__main__":
    p.main()
