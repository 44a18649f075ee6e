package bench

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"sync/atomic"
	"time"

	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/ingest"
)

// Sealed is one sealed request: body and headers as Lark posts them.
type Sealed struct {
	Body   []byte
	Header http.Header
}

// SealMany seals n fresh events from src (each with its own nonce).
func SealMany(src *Source, app App, n int) ([]Sealed, error) {
	out := make([]Sealed, n)
	for i := range out {
		b, h, err := Seal(app, src.Next().Plain)
		if err != nil {
			return nil, err
		}
		out[i] = Sealed{Body: b, Header: h}
	}
	return out, nil
}

// nopPublisher stores nothing and succeeds at once.
type nopPublisher struct{}

func (nopPublisher) Publish(context.Context, string, bus.Message) error { return nil }

// IngestHandler is larkway's webhook handler for app over a bus that
// accepts every event at once: the per-event work of ingest alone.
func IngestHandler(app App) http.Handler {
	return ingest.New(ingest.Config{Apps: []ingest.App{{ID: app.ID, VerificationToken: app.VerificationToken,
		EncryptKey: app.EncryptKey, EventPath: "/lark/events"}}, MaxBodyBytes: 1 << 20, PublishTimeout: 2 * time.Second},
		nopPublisher{}, slog.New(slog.DiscardHandler), nil)
}

// MicroResult is a per-event cost.
type MicroResult struct {
	NsPerEvent     float64 `json:"ns_per_event"`
	AllocsPerEvent float64 `json:"allocs_per_event"`
	BytesPerEvent  float64 `json:"bytes_per_event"`
	Events         int     `json:"events"`
}

// Prepared is requests with their recorders, built ahead of timing.
type Prepared struct {
	reqs []*http.Request
	recs []*httptest.ResponseRecorder
}

// Prepare builds a request and a recorder for each sealed request.
func Prepare(reqs []Sealed) Prepared {
	p := Prepared{reqs: make([]*http.Request, len(reqs)), recs: make([]*httptest.ResponseRecorder, len(reqs))}
	for i, s := range reqs {
		p.reqs[i] = httptest.NewRequest(http.MethodPost, "/lark/events", bytes.NewReader(s.Body))
		p.reqs[i].Header = s.Header
		p.recs[i] = httptest.NewRecorder()
	}
	return p
}

// ServeEach runs h once on each request in one goroutine, in memory (no
// network), and reports the cost per request. Requests and recorders are
// built before the clock starts, so only the handlers' own work (the same
// for larkway and the SDK reference) is timed. Every answer must be a 200.
func ServeEach(h http.Handler, reqs []Sealed) (MicroResult, error) {
	return ServePrepared(h, Prepare(reqs))
}

// ServePrepared is ServeEach on prepared requests.
func ServePrepared(h http.Handler, p Prepared) (MicroResult, error) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	for i, r := range p.reqs {
		h.ServeHTTP(p.recs[i], r)
	}
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	for i, w := range p.recs {
		if w.Code != http.StatusOK {
			return MicroResult{}, fmt.Errorf("request %d answered %d: %s", i, w.Code, w.Body)
		}
	}
	n := float64(len(p.reqs))
	return MicroResult{NsPerEvent: float64(elapsed.Nanoseconds()) / n, AllocsPerEvent: float64(after.Mallocs-before.Mallocs) / n,
		BytesPerEvent: float64(after.TotalAlloc-before.TotalAlloc) / n, Events: len(p.reqs)}, nil
}

// microRounds interleaves the two handlers, so a burst of load from
// elsewhere on a shared machine hits both rather than one.
const microRounds = 10

// Micro measures verify + decrypt + normalize per event, in memory: larkway's
// ingest handler (over a bus that stores nothing) beside oapi-sdk-go's
// httpserverext + dispatcher doing the same work, each on n freshly sealed
// events (after a warm-up), in alternating rounds. Each figure is the
// median of its rounds' per-event costs.
func Micro(app App, n int) (ours, sdk MicroResult, err error) {
	src, err := NewSource(app, "micro", 50)
	if err != nil {
		return ours, sdk, err
	}
	var handled atomic.Int64
	steps := []struct {
		h      http.Handler
		out    *MicroResult
		rounds []MicroResult
	}{{h: IngestHandler(app), out: &ours}, {h: SDKDispatcher(app, &handled), out: &sdk}}
	for i := range steps {
		warm, err := SealMany(src, app, max(n/10, 100))
		if err != nil {
			return ours, sdk, err
		}
		if _, err := ServeEach(steps[i].h, warm); err != nil {
			return ours, sdk, err
		}
	}
	per := max(n/microRounds, 1)
	for range microRounds {
		for i := range steps {
			reqs, err := SealMany(src, app, per)
			if err != nil {
				return ours, sdk, err
			}
			r, err := ServeEach(steps[i].h, reqs)
			if err != nil {
				return ours, sdk, err
			}
			steps[i].rounds = append(steps[i].rounds, r)
		}
	}
	for i := range steps {
		rs := steps[i].rounds
		slices.SortFunc(rs, func(a, b MicroResult) int { return cmp.Compare(a.NsPerEvent, b.NsPerEvent) })
		*steps[i].out = rs[len(rs)/2]
		steps[i].out.Events = per * len(rs)
	}
	return ours, sdk, nil
}
