"""py-echo, driven in-process with the SDK's test kit."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import larkway
from larkway import testing

MAIN = Path(__file__).with_name("main.py")
_spec = importlib.util.spec_from_file_location("py_echo_main", MAIN)
py_echo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(py_echo)


def test_replies_with_the_text():
    res = testing.run(py_echo.new_plugin(), testing.message("hello there"))
    assert res.outcome == "done"
    assert res.actions == [larkway.ActionSummary(kind="reply", target="", msg_type="text",
                                                 content_json='{"text":"echo: hello there"}')]


def test_mentions_come_through_as_names():
    res = testing.run(py_echo.new_plugin(), testing.message("@Bot /help me", mentions=["Bot"]))
    testing.assert_reply_text(res, "echo: @Bot /help me")


def test_non_text_messages():
    ev = testing.message("", msg_type="image", content_json='{"image_key":"img_1"}')
    assert testing.run(py_echo.new_plugin(), ev).texts == ["echo: (image message)"]


def test_many_at_once():
    evs = [testing.message(f"m{i}") for i in range(20)]
    results = testing.run_many(py_echo.new_plugin(), evs)
    assert [r.texts for r in results] == [[f"echo: m{i}"] for i in range(20)]


def test_manifest():
    m = testing.manifest(py_echo.new_plugin())
    assert (m["name"], m["version"]) == ("py-echo", "1.0.0")
    assert m["allowed_actions"] == ["ACTION_KIND_REPLY"]
    assert [s["event_types"] for s in m["subscriptions"]] == [["im.message.receive_v1"]]


def test_refuses_to_run_by_hand():
    env = {k: v for k, v in os.environ.items() if k != larkway.contract.MAGIC_COOKIE_KEY}
    r = subprocess.run([sys.executable, str(MAIN)], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "py-echo is a larkway plugin" in r.stderr


def test_entry_script_is_executable():
    assert os.access(MAIN, os.X_OK)
    assert MAIN.read_text().startswith("#!/usr/bin/env python3\n")
