from __future__ import annotations

import json
import logging
import os
import sys
import threading
import traceback
from datetime import datetime, timezone
from typing import Any, TextIO

_LEVELS = {"debug": 10, "info": 20, "warn": 30, "warning": 30, "error": 40}
_NAMES = {10: "DEBUG", 20: "INFO", 30: "WARN", 40: "ERROR"}
_lock = threading.Lock()


def _level_from_env() -> int:
    return _LEVELS.get(os.environ.get("LARKWAY_LOG_LEVEL", "info").strip().lower(), 20)


class Logger:
    """Structured logger writing one JSON object per line to stderr.

    Every line has ``time``, ``level`` (DEBUG, INFO, WARN, ERROR) and ``msg``,
    plus the keyword fields: ``log.info("deployed", env="prod")``. The core
    re-logs each line under the plugin's name and version, keeping level and
    fields. The minimum level comes from ``LARKWAY_LOG_LEVEL`` (default info).
    """

    def __init__(self, stream: TextIO | None = None, level: int | str | None = None,
                 fields: dict[str, Any] | None = None) -> None:
        self._stream = stream
        if isinstance(level, str):
            level = _LEVELS.get(level.lower(), 20)
        self._level = _level_from_env() if level is None else level
        self._fields = dict(fields or {})

    def bind(self, **fields: Any) -> Logger:
        """A logger adding these fields to every line."""
        return Logger(self._stream, self._level, {**self._fields, **fields})

    def enabled(self, level: int) -> bool:
        return level >= self._level

    def log(self, level: int, msg: str, exc: BaseException | None = None, **fields: Any) -> None:
        if level < self._level:
            return
        rec: dict[str, Any] = {
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": _NAMES.get(level, "INFO"),
            "msg": msg,
        }
        rec.update(self._fields)
        rec.update(fields)
        if exc is not None:
            rec["error"] = f"{type(exc).__name__}: {exc}"
            rec["traceback"] = "".join(traceback.format_exception(exc)).rstrip()
        line = json.dumps(rec, ensure_ascii=False, default=str) + "\n"
        stream = self._stream or sys.stderr
        with _lock:
            try:
                stream.write(line)
                stream.flush()
            except (OSError, ValueError):
                pass  # stderr gone: nothing sensible to do

    def debug(self, msg: str, **fields: Any) -> None:
        self.log(10, msg, **fields)

    def info(self, msg: str, **fields: Any) -> None:
        self.log(20, msg, **fields)

    def warn(self, msg: str, **fields: Any) -> None:
        self.log(30, msg, **fields)

    warning = warn

    def error(self, msg: str, **fields: Any) -> None:
        self.log(40, msg, **fields)


class JSONHandler(logging.Handler):
    """A stdlib logging handler writing the same JSON lines as Logger, so
    ``logging.getLogger(...)`` in plugin code reaches the core's logs too."""

    def __init__(self, logger: Logger | None = None) -> None:
        super().__init__()
        self._logger = logger or Logger(level=10)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            lvl = 40 if record.levelno >= 40 else 30 if record.levelno >= 30 else 20 if record.levelno >= 20 else 10
            exc = record.exc_info[1] if record.exc_info else None
            self._logger.log(lvl, record.getMessage(), exc=exc, logger=record.name)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)
