// Command echovariant is a test plugin: a modified echo for canary and
// shadow tests. It names itself echo, and its behaviour comes from the
// environment: ECHO_VERSION (default 2.0.0), ECHO_PREFIX (default
// "echo2: ") before the echoed text, and ECHO_FAIL_PERCENT, the share of
// deliveries it fails with an error (a retry), chosen at random.
package main

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"strconv"

	"github.com/larkway/larkway/sdk/go/larkway"
)

func env(k, def string) string {
	if v, ok := os.LookupEnv(k); ok {
		return v
	}
	return def
}

func main() {
	prefix := env("ECHO_PREFIX", "echo2: ")
	failPercent, _ := strconv.Atoi(env("ECHO_FAIL_PERCENT", "0"))
	p := larkway.New("echo", env("ECHO_VERSION", "2.0.0"), larkway.WithActions(larkway.ActionReply))
	p.OnMessage(func(_ context.Context, ev *larkway.Event) ([]larkway.Action, error) {
		if rand.IntN(100) < failPercent {
			return nil, errors.New("echovariant: failing as told")
		}
		return []larkway.Action{larkway.ReplyText(prefix + ev.Message.Text)}, nil
	})
	p.Main()
}
