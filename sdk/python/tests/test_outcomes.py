import asyncio

import pytest

import larkway
from larkway import testing


def plugin_with(handler):
    p = larkway.Plugin("outcomes", "1.0.0", actions=[larkway.ActionKind.REPLY])
    p.on_message(handler)
    return p


def test_done_with_actions():
    res = testing.run(plugin_with(lambda ev: [larkway.reply_text("a"), larkway.reply_text("b")]),
                      testing.message("x"))
    assert (res.outcome, res.error, res.retry_after) == ("done", "", None)
    assert res.texts == ["a", "b"]


def test_done_without_actions():
    res = testing.run(plugin_with(lambda ev: None), testing.message("x"))
    assert res.outcome == "done" and res.actions == []


def raise_(e):
    def h(ev):
        raise e
    return h


@pytest.mark.parametrize("exc,outcome,error,retry_after", [
    (larkway.Permanent("bad input"), "failed", "bad input", None),
    (larkway.RetryAfter(30, "rate limited"), "retry", "rate limited", 30.0),
    (larkway.RetryAfter(1.5), "retry", "retry after 1.5s", 1.5),
    (larkway.RetryAfter(0, "now"), "retry", "now", None),
    (ValueError("boom"), "retry", "ValueError: boom", None),
    (KeyError("k"), "retry", "KeyError: 'k'", None),
])
def test_exceptions_class_the_outcome(exc, outcome, error, retry_after):
    res = testing.run(plugin_with(raise_(exc)), testing.message("x"))
    assert (res.outcome, res.error, res.retry_after) == (outcome, error, retry_after)
    assert res.actions == []


def test_wrapped_permanent_counts():
    def h(ev):
        try:
            raise larkway.Permanent("root cause")
        except larkway.Permanent as e:
            raise RuntimeError("while handling") from e
    res = testing.run(plugin_with(h), testing.message("x"))
    assert (res.outcome, res.error) == ("failed", "root cause")


def test_async_handlers_class_the_same_way():
    async def ok(ev):
        await asyncio.sleep(0)
        return larkway.reply_text("async")

    async def perm(ev):
        raise larkway.Permanent("nope")

    assert testing.run(plugin_with(ok), testing.message("x")).texts == ["async"]
    assert testing.run(plugin_with(perm), testing.message("x")).outcome == "failed"


def test_a_crashing_handler_is_a_retry_and_logged(capsys):
    res = testing.run(plugin_with(raise_(ZeroDivisionError("division by zero"))), testing.message("x"))
    assert res.outcome == "retry"
    err = capsys.readouterr().err
    assert '"level": "ERROR"' in err and "ZeroDivisionError" in err


@pytest.mark.parametrize("bad", ["a string", 42, [larkway.reply_text("ok"), "not an action"], {"k": "v"}])
def test_invalid_return_is_failed_not_a_crash(bad):
    res = testing.run(plugin_with(lambda ev: bad), testing.message("x"))
    assert res.outcome == "failed"
    assert "handler returned" in res.error


def test_retry_after_rejects_negative():
    with pytest.raises(ValueError):
        larkway.RetryAfter(-1)


def test_retry_after_fractions_stay_valid():
    res = testing.run(plugin_with(raise_(larkway.RetryAfter(1.9999999999))), testing.message("x"))
    assert res.outcome == "retry" and res.retry_after == 2.0


@pytest.mark.skipif(not hasattr(asyncio.Task, "cancelling"), reason="needs Task.cancelling (Python 3.11+)")
def test_a_handler_raising_cancelled_error_is_an_ordinary_retry():
    async def h(ev):
        if ev.message.text == "cancel":
            raise asyncio.CancelledError()
        return larkway.reply_text("ok")

    results = testing.run_many(plugin_with(h), [testing.message("cancel"), testing.message("fine")])
    assert (results[0].outcome, results[0].error) == ("retry", "CancelledError: the handler was cancelled")
    assert results[1].texts == ["ok"]


def test_assert_helpers():
    ok = testing.run(plugin_with(lambda ev: larkway.reply_text("hello world")), testing.message("x"))
    testing.assert_done(ok)
    testing.assert_reply_text(ok, "world")
    bad = testing.run(plugin_with(raise_(ValueError("x"))), testing.message("x"))
    with pytest.raises(AssertionError, match="want done"):
        testing.assert_done(bad)
    with pytest.raises(AssertionError, match="does not contain"):
        testing.assert_reply_text(ok, "absent")
