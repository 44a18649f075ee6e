"""A plugin the process-level tests launch the way the core does."""

import asyncio

import larkway

p = larkway.Plugin("fixture", "0.1.0", actions=[larkway.ActionKind.REPLY])


@p.on_message
async def handle(ev: larkway.Event):
    if ev.message.text.startswith("sleep "):
        await asyncio.sleep(float(ev.message.text.split()[1]))
    print("printed after the handshake")
    return larkway.reply_text("echo: " + ev.message.text)


if __name__ == "__main__":
    p.main()
