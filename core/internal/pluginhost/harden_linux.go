package pluginhost

import (
	"log/slog"
	"sync"
	"syscall"
)

const prSetDumpable = 4 // PR_SET_DUMPABLE, <linux/prctl.h>

var hardenOnce sync.Once

// hardenHost makes the core process non-dumpable before its first plugin
// starts. A plugin runs as the core's user, and a same-user process may
// read another's /proc/PID/environ and memory — where the core's secrets
// are — unless that process is non-dumpable. Plugins are unaffected: exec
// makes every new program dumpable again. The cost is no core dumps of the
// core, and no debugger attaching to it without root.
func hardenHost(logger *slog.Logger) {
	hardenOnce.Do(func() {
		if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetDumpable, 0, 0); errno != 0 {
			logger.Warn("could not make the core non-dumpable; plugins may read its environment from /proc", "err", errno)
		}
	})
}
