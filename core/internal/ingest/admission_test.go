package ingest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/bus/memory"
	"github.com/larkway/larkway/core/internal/envelope"
	"github.com/larkway/larkway/core/internal/testenv"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

func eventID(t *testing.T, payload []byte) string {
	t.Helper()
	ev, err := envelope.Decode(payload)
	if err != nil {
		t.Error(err)
		return ""
	}
	return ev.GetEventId()
}

// countingReplay counts nonce checks: checkSigned reaches the replay cache
// only after the signature verified, so a count of zero means no request
// got that far. block, if set, holds every check until it is closed.
type countingReplay struct {
	inner ReplayCache
	n     atomic.Int64
	block chan struct{}
}

func (c *countingReplay) Seen(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	c.n.Add(1)
	if c.block != nil {
		<-c.block
	}
	return c.inner.Seen(ctx, key, ttl)
}

// admissionServer is an encrypted app's server on pub, with its registry.
func admissionServer(pub bus.Publisher, replay ReplayCache, inFlight int, wait time.Duration) (*Server, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	return New(Config{
		Apps:           []App{{ID: "cli_test", VerificationToken: "vt", EncryptKey: testKey, EventPath: "/lark/events"}},
		MaxBodyBytes:   1 << 20,
		PublishTimeout: 10 * time.Second,
		Now:            func() time.Time { return testNow },
		Replay:         replay,
		MaxInFlight:    inFlight,
		AdmissionWait:  wait,
	}, pub, slog.New(slog.DiscardHandler), reg), reg
}

// eventWithID is messageEvent with its own event id.
func eventWithID(id string) string {
	return strings.Replace(messageEvent("vt"), `"event_id":"ev1"`, fmt.Sprintf(`"event_id":%q`, id), 1)
}

// readCounter is a request body that counts the bytes read from it.
type readCounter struct {
	r io.Reader
	n *atomic.Int64
}

func (c readCounter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (readCounter) Close() error { return nil }

// serve sends one request to h and returns the recorded answer and how
// many bytes of its body h read.
func serve(h http.Handler, body string, hdr http.Header) (*httptest.ResponseRecorder, int64) {
	var read atomic.Int64
	req := httptest.NewRequest(http.MethodPost, "/lark/events", nil)
	req.Body = readCounter{r: strings.NewReader(body), n: &read}
	req.ContentLength = int64(len(body))
	req.Header = hdr.Clone()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec, read.Load()
}

// fullBus is a memory bus with one subscription and room for n messages
// of about the size of a test event.
func fullBus(t *testing.T, n int) (*memory.Bus, bus.Consumer) {
	t.Helper()
	// Sized as ingest stores an event: its body alone.
	ev := mustEvent(t, eventWithID("sizing"))
	msg := envelope.EncodeRaw(nil, "cli_test", ev.GetRawJson(), ev)
	b := memory.New(nil, memory.WithMaxRetainedBytes(int64(n)*memory.MessageHeap(msg, 1)))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			t.Errorf("closing the bus: %v", err)
		}
	})
	c, err := b.Subscribe(t.Context(), bus.SubscribeOptions{Topic: envelope.Topic("cli_test"), Subscription: "p"})
	if err != nil {
		t.Fatal(err)
	}
	return b, c
}

func mustEvent(t *testing.T, plain string) *pluginv1.Event {
	t.Helper()
	body, err := envelope.Parse("cli_test", []byte(plain))
	if err != nil {
		t.Fatal(err)
	}
	ev, err := body.Event()
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// Over the bound, a forged request, an unsigned one and a valid one all get
// the same cheap 503 with Retry-After: no byte of their bodies is read, so
// nothing is verified or decrypted, and the valid request's nonce is not
// spent — Lark's retry of it is stored once dispatch makes room. A request
// whose publish brought the bus to its bound was stored and answered 200.
func TestOverBoundRefusedBeforeVerifying(t *testing.T) {
	b, c := fullBus(t, 2)
	replay := &countingReplay{inner: NewMemoryReplayCache()}
	// The wait expires: nothing acknowledges while the three are refused.
	srv, reg := admissionServer(b, replay, 0, time.Millisecond)

	for i := range 2 {
		body, h := sealed(t, eventWithID(fmt.Sprintf("fill%d", i)), testKey, testNow, fmt.Sprintf("fill%d", i))
		if rec, _ := serve(srv, body, h); rec.Code != http.StatusOK {
			t.Fatalf("event %d under the bound: %d %s", i, rec.Code, rec.Body)
		}
	}
	checks := replay.n.Load()

	validBody, validHdr := sealed(t, eventWithID("valid"), testKey, testNow, "valid")
	forgedBody, forgedHdr := sealed(t, eventWithID("forged"), testKey, testNow, "forged")
	forgedHdr.Set(HeaderSignature, strings.Repeat("0", 64))
	unsignedBody, _ := sealed(t, eventWithID("unsigned"), testKey, testNow, "unsigned")
	for _, tc := range []struct {
		name string
		body string
		hdr  http.Header
	}{
		{"valid", validBody, validHdr},
		{"forged signature", forgedBody, forgedHdr},
		{"unsigned", unsignedBody, http.Header{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, read := serve(srv, tc.body, tc.hdr)
			if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != retryAfter {
				t.Fatalf("over the bound: %d Retry-After %q, want 503 with Retry-After %s", rec.Code, rec.Header().Get("Retry-After"), retryAfter)
			}
			if !strings.Contains(rec.Body.String(), `"reason":"overloaded"`) {
				t.Fatalf("body %s, want reason overloaded", rec.Body)
			}
			if read != 0 {
				t.Fatalf("read %d bytes of the body before refusing, want none", read)
			}
		})
	}
	if n := replay.n.Load() - checks; n != 0 {
		t.Fatalf("%d requests were verified over the bound, want 0", n)
	}
	if v := testenv.MetricValue(t, reg, "larkway_ingest_rejections_total", "reason", "overloaded"); v != 3 {
		t.Fatalf("overloaded rejections = %v, want 3", v)
	}
	if v := testenv.MetricValue(t, reg, "larkway_ingest_rejections_total", "reason", "bad_signature"); v > 0 {
		t.Fatalf("bad_signature rejections = %v, want 0: the forged request was verified", v)
	}

	// Dispatch makes room: the same valid request (same nonce: it was never
	// spent) is stored; the forged one is now verified, and refused.
	for range 2 {
		d, err := c.Receive(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		_ = d.Ack()
	}
	if rec, _ := serve(srv, validBody, validHdr); rec.Code != http.StatusOK {
		t.Fatalf("the refused request resent after room was made: %d %s", rec.Code, rec.Body)
	}
	if rec, _ := serve(srv, forgedBody, forgedHdr); rec.Code != http.StatusUnauthorized {
		t.Fatalf("forged request with room: %d, want 401", rec.Code)
	}
	d, err := c.Receive(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	_ = d.Ack()
	if got := eventID(t, d.Payload); got != "valid" {
		t.Fatalf("stored %q, want the valid event", got)
	}
}

// At the bound a request waits, parked and unread, for an acknowledgement
// to make room, and is then stored: a peak is paced at the rate dispatch
// drains the bus instead of being refused.
func TestAdmissionWaitsForRoom(t *testing.T) {
	b, c := fullBus(t, 1)
	srv, reg := admissionServer(b, NewMemoryReplayCache(), 0, time.Minute)
	body, h := sealed(t, eventWithID("first"), testKey, testNow, "first")
	if rec, _ := serve(srv, body, h); rec.Code != http.StatusOK {
		t.Fatalf("first event: %d", rec.Code)
	}
	done := make(chan int)
	body2, h2 := sealed(t, eventWithID("second"), testKey, testNow, "second")
	go func() {
		rec, _ := serve(srv, body2, h2)
		done <- rec.Code
	}()
	testenv.Eventually(t, 10*time.Second, "the second request waits for room", func() bool {
		return testenv.MetricValue(t, reg, "larkway_ingest_admission_waiting") == 1
	})
	select {
	case code := <-done:
		t.Fatalf("answered %d while the bus was at its bound", code)
	default:
	}
	d, err := c.Receive(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	_ = d.Ack()
	if code := <-done; code != http.StatusOK {
		t.Fatalf("after room was made: %d, want 200", code)
	}
}

// At most MaxInFlight requests are verified at once; the next waits for a
// slot, and gets the overload 503 if none frees within AdmissionWait.
func TestInFlightBound(t *testing.T) {
	for _, tc := range []struct {
		name string
		wait time.Duration
		want int // the second request's answer
	}{
		{"waits for the slot", time.Minute, http.StatusOK},
		{"refused when no slot frees in time", time.Millisecond, http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			replay := &countingReplay{inner: NewMemoryReplayCache(), block: make(chan struct{})}
			srv, reg := admissionServer(&recorder{}, replay, 1, tc.wait)
			first := make(chan int)
			body1, h1 := sealed(t, eventWithID("a"), testKey, testNow, "a")
			go func() {
				rec, _ := serve(srv, body1, h1)
				first <- rec.Code
			}()
			// The first holds the only slot, blocked in its nonce check.
			testenv.Eventually(t, 10*time.Second, "the first request is being verified", func() bool { return replay.n.Load() == 1 })
			second := make(chan int)
			body2, h2 := sealed(t, eventWithID("b"), testKey, testNow, "b")
			go func() {
				rec, _ := serve(srv, body2, h2)
				second <- rec.Code
			}()
			if tc.want == http.StatusOK {
				testenv.Eventually(t, 10*time.Second, "the second request waits for a slot", func() bool {
					return testenv.MetricValue(t, reg, "larkway_ingest_admission_waiting") == 1
				})
				if n := replay.n.Load(); n != 1 {
					t.Fatalf("%d requests verified at once, want 1", n)
				}
				close(replay.block)
			} else {
				if code := <-second; code != tc.want {
					t.Fatalf("second request: %d, want %d", code, tc.want)
				}
				close(replay.block)
			}
			if code := <-first; code != http.StatusOK {
				t.Fatalf("first request: %d", code)
			}
			if tc.want == http.StatusOK {
				if code := <-second; code != tc.want {
					t.Fatalf("second request: %d, want %d", code, tc.want)
				}
			}
		})
	}
}

// fillingBus admits, then finds itself full at the publish (another
// publisher got there first), then has room once room is closed.
type fillingBus struct {
	recorder
	mu     sync.Mutex
	full   bool
	room   chan struct{}
	tries  int
	filled chan struct{}
}

func (f *fillingBus) Room() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.full {
		return nil
	}
	return f.room
}

func (f *fillingBus) Publish(ctx context.Context, topic string, m bus.Message) error {
	f.mu.Lock()
	f.tries++
	if f.tries == 1 {
		f.full = true
		f.mu.Unlock()
		close(f.filled)
		return fmt.Errorf("publishing: %w", bus.ErrFull)
	}
	f.mu.Unlock()
	return f.recorder.Publish(ctx, topic, m)
}

// A request admitted and verified is not thrown away when the bus fills
// before its publish: it waits for room within the publish timeout and is
// stored, answered 200.
func TestVerifiedEventWaitsForRoomAtPublish(t *testing.T) {
	pub := &fillingBus{room: make(chan struct{}), filled: make(chan struct{})}
	srv, _ := admissionServer(pub, NewMemoryReplayCache(), 0, time.Minute)
	body, h := sealed(t, eventWithID("late"), testKey, testNow, "late")
	done := make(chan int)
	go func() {
		rec, _ := serve(srv, body, h)
		done <- rec.Code
	}()
	<-pub.filled
	pub.mu.Lock()
	pub.full = false
	pub.mu.Unlock()
	close(pub.room)
	if code := <-done; code != http.StatusOK {
		t.Fatalf("answered %d, want 200 once room was made", code)
	}
	if pub.tries != 2 || len(pub.msgs) != 1 {
		t.Fatalf("%d publishes, %d stored; want 2 and 1", pub.tries, len(pub.msgs))
	}
}

// Under overload nothing is lost or duplicated: senders that retry every
// refusal, as Lark does, against a bus with room for a few events and a
// consumer acknowledging concurrently, all get their events stored once.
func TestOverloadLosesNothing(t *testing.T) {
	b, c := fullBus(t, 3)
	srv, reg := admissionServer(b, NewMemoryReplayCache(), 1, time.Millisecond)
	const senders, each = 8, 25
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	got := make(map[string]int)
	consumed := make(chan struct{})
	go func() {
		defer close(consumed)
		for {
			d, err := c.Receive(ctx)
			if err != nil {
				return
			}
			got[eventID(t, d.Payload)]++
			_ = d.Ack()
		}
	}()
	var wg sync.WaitGroup
	var refused atomic.Int64
	for s := range senders {
		wg.Go(func() {
			for i := range each {
				id := fmt.Sprintf("s%d-%d", s, i)
				for try := 0; ; try++ {
					// Each retry is a new request: Lark signs it anew.
					body, h := sealed(t, eventWithID(id), testKey, testNow, fmt.Sprintf("%s-%d", id, try))
					rec, _ := serve(srv, body, h)
					if rec.Code == http.StatusOK {
						break
					}
					if rec.Code != http.StatusServiceUnavailable {
						t.Errorf("%s: %d %s", id, rec.Code, rec.Body)
						return
					}
					refused.Add(1)
				}
			}
		})
	}
	wg.Wait()
	testenv.Eventually(t, 10*time.Second, "every stored event consumed", func() bool {
		n, err := b.Backlog(t.Context(), envelope.Topic("cli_test"), "p")
		return err == nil && n == 0
	})
	cancel()
	<-consumed
	if len(got) != senders*each {
		t.Fatalf("%d distinct events consumed, want %d", len(got), senders*each)
	}
	for id, n := range got {
		if n != 1 {
			t.Fatalf("event %s consumed %d times", id, n)
		}
	}
	stored := testenv.MetricValue(t, reg, "larkway_ingest_requests_total", "outcome", "stored")
	if stored != senders*each {
		t.Fatalf("%v answered 200, want %d", stored, senders*each)
	}
	t.Logf("%d refusals while %d events were stored", refused.Load(), senders*each)
}

// An event is stored once, as its decrypted body (envelope.EncodeRaw), not
// as the body plus its normalized form; the dispatcher's decode gives the
// Event ingest normalized.
func TestStoresTheBodyOnce(t *testing.T) {
	b, c := fullBus(t, 4)
	srv, _ := admissionServer(b, NewMemoryReplayCache(), 0, time.Minute)
	plain := eventWithID("once")
	body, h := sealed(t, plain, testKey, testNow, "once")
	if rec, _ := serve(srv, body, h); rec.Code != http.StatusOK {
		t.Fatalf("event: %d %s", rec.Code, rec.Body)
	}
	d, err := c.Receive(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	_ = d.Ack()
	if limit := len(plain) * 11 / 10; len(d.Payload) > limit {
		t.Fatalf("stored %d bytes for a %d-byte body, want at most %d", len(d.Payload), len(plain), limit)
	}
	got, err := envelope.Decode(d.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if want := mustEvent(t, plain); !proto.Equal(got, want) {
		t.Fatalf("decoded %v, want %v", got, want)
	}
	if d.Key != envelope.PartitionKey(got) {
		t.Fatalf("key %q, want %q", d.Key, envelope.PartitionKey(got))
	}
}
