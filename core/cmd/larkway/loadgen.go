package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/larkway/larkway/core/internal/bench"
)

// loadgenOptions are loadgen's flags.
type loadgenOptions struct {
	url, appID, token, encryptKey, phases, run, acceptedIDs string
	conns, chats                                            int
}

// newLoadgenCmd is the load generator as a process of its own: bench runs
// it so that the load's CPU is not the measured core's, and it can be
// pointed at any webhook.
func newLoadgenCmd(stdout io.Writer) *cobra.Command {
	o := &loadgenOptions{}
	c := &cobra.Command{
		Use:   "loadgen --url URL [flags]",
		Short: "Post signed, encrypted Lark events at fixed rates; one JSON line per second",
		Long: `larkway loadgen — post signed and encrypted golden Lark events to a webhook, each
request with its own nonce and signature, through --phases (durations at offered
events/s, open loop; rate 0 is closed loop, every connection flat out), printing
one JSON line per second: offered, unsent (due while every connection was busy),
accepted (200), rejected (503), failed, ack_p99_ms. A refused event is not retried.
With --accepted-ids it also writes the event_id of every event answered 200 to
FILE, one a line (the bench counts deliveries per id with it).`,
		Example: `  larkway loadgen --url http://127.0.0.1:8080/lark/events --phases 30s@0 --conns 64
  larkway loadgen --url http://127.0.0.1:8080/lark/events --phases 10s@5000,10s@15000,10s@5000 --conns 512`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) (retErr error) {
			if o.url == "" {
				return usagef("--url is required")
			}
			phases, err := bench.ParsePhases(o.phases)
			if err != nil {
				return usagef("--phases: %v", err)
			}
			app := bench.App{ID: o.appID, VerificationToken: o.token, EncryptKey: o.encryptKey}
			src, err := bench.NewSource(app, o.run, o.chats)
			if err != nil {
				return err
			}
			var accepted func(string)
			if o.acceptedIDs != "" {
				f, err := os.Create(o.acceptedIDs)
				if err != nil {
					return fmt.Errorf("creating --accepted-ids: %w", err)
				}
				w := bufio.NewWriterSize(f, 1<<16)
				var mu sync.Mutex
				accepted = func(id string) {
					mu.Lock()
					defer mu.Unlock()
					_, _ = w.WriteString(id)
					_ = w.WriteByte('\n')
				}
				defer func() {
					mu.Lock()
					defer mu.Unlock()
					if err := errors.Join(w.Flush(), f.Close()); err != nil && retErr == nil {
						retErr = fmt.Errorf("writing --accepted-ids: %w", err)
					}
				}()
			}
			enc := json.NewEncoder(stdout)
			return bench.Sustain(c.Context(), src, o.url, app, o.conns, phases, func(s bench.Second) { _ = enc.Encode(s) }, accepted)
		},
	}
	fs := c.Flags()
	fs.StringVar(&o.url, "url", "", "webhook URL")
	fs.StringVar(&o.appID, "app-id", "cli_bench", "app id")
	fs.StringVar(&o.token, "token", "bench-verification-token", "verification token")
	fs.StringVar(&o.encryptKey, "encrypt-key", "bench-encrypt-key", "encrypt key (empty: plain, unsigned)")
	fs.StringVar(&o.phases, "phases", "30s@0", "comma-separated <duration>@<events/s> (0: closed loop)")
	fs.StringVar(&o.run, "run", time.Now().Format("150405")+"_", "prefix making this run's event ids unique")
	fs.IntVar(&o.conns, "conns", 64, "keep-alive connections")
	fs.IntVar(&o.chats, "chats", 100, "chats the events spread over")
	fs.StringVar(&o.acceptedIDs, "accepted-ids", "", "write the event_id of every event answered 200 to `FILE`, one a line")
	return c
}
