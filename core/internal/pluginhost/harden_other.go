//go:build !linux

package pluginhost

import "log/slog"

// hardenHost is Linux-only (prctl PR_SET_DUMPABLE); elsewhere a plugin that
// must not see the core's process at all runs under its own user.
func hardenHost(*slog.Logger) {}
