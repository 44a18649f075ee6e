"""A plugin keeping a counter in the core's state store, launched by
test_state.py the way the core launches plugins."""

import larkway

p = larkway.Plugin("fixture-state", "0.1.0", actions=[larkway.ActionKind.REPLY])


@p.on_command("/count")
def count(ev: larkway.Event, cmd: larkway.Command):
    """Sync handler: increments count:<chat> with compare-and-swap."""
    key = "count:" + ev.chat_id
    for _ in range(10):
        e = p.state.get(key)
        n = int(e.value) + 1 if e else 1
        swapped, _ = p.state.compare_and_swap(key, e.revision if e else 0, str(n), ttl=60)
        if swapped:
            return larkway.reply_text(f"count: {n}")
    raise RuntimeError("state store contended")


@p.on_command("/acount")
async def acount(ev: larkway.Event, cmd: larkway.Command):
    """Async handler: the same with the coroutine API."""
    key = "count:" + ev.chat_id
    for _ in range(10):
        e = await p.state.aget(key)
        n = int(e.value) + 1 if e else 1
        swapped, _ = await p.state.acompare_and_swap(key, e.revision if e else 0, str(n))
        if swapped:
            return larkway.reply_text(f"count: {n}")
    raise RuntimeError("state store contended")


@p.on_command("/reset")
def reset(ev: larkway.Event, cmd: larkway.Command):
    existed = p.state.delete("count:" + ev.chat_id)
    rev = p.state.set("reset-by", ev.sender.open_id)
    return larkway.reply_text(f"reset: existed={existed} rev={rev > 0}")


if __name__ == "__main__":
    p.main()
