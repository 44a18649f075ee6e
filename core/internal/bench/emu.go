package bench

import (
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/larkway/larkway/core/larkemu"
)

// Emulator is the Lark emulator, unlimited, served on loopback, with a tap
// that tells a ledger when each reply arrives.
type Emulator struct {
	Emu *larkemu.Emulator
	srv *Server

	mu     sync.Mutex
	ledger *Ledger
}

// StartEmulator serves an unlimited emulator for app on loopback.
func StartEmulator(app App) (*Emulator, error) {
	e := &Emulator{Emu: larkemu.New(larkemu.Options{Apps: map[string]string{app.ID: "bench-secret"}, Unlimited: true})}
	inner := e.Emu.Handler()
	tap := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		inner.ServeHTTP(rw, r)
		// POST /open-apis/im/v1/messages/{message_id}/reply
		if r.Method != http.MethodPost || rw.status != http.StatusOK || !strings.HasSuffix(r.URL.Path, "/reply") {
			return
		}
		id := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/open-apis/im/v1/messages/"), "/reply")
		e.mu.Lock()
		l := e.ledger
		e.mu.Unlock()
		if l != nil {
			l.Reply(id, time.Now())
		}
	})
	srv, err := Serve(tap, "")
	if err != nil {
		return nil, err
	}
	e.srv = srv
	return e, nil
}

// URL is the OpenAPI base URL.
func (e *Emulator) URL() string { return e.srv.URL }

// Watch sends the replies from now on to l (nil: to none), and forgets what
// the emulator recorded so far.
func (e *Emulator) Watch(l *Ledger) {
	e.mu.Lock()
	e.ledger = l
	e.mu.Unlock()
	e.Emu.Reset()
}

// Recorded counts the replies the emulator recorded (after its uuid
// deduplication, as Lark's), by replied-to message.
func (e *Emulator) Recorded() map[string]int {
	out := map[string]int{}
	for _, m := range e.Emu.Messages() {
		if m.ParentID != "" {
			out[m.ParentID]++
		}
	}
	return out
}

// Close stops serving.
func (e *Emulator) Close() error { return e.srv.Close() }

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}
