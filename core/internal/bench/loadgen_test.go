package bench

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/envelope"
	"github.com/larkway/larkway/core/internal/ingest"
)

var testApp = App{ID: "cli_bench_test", VerificationToken: "vt-test", EncryptKey: "ek-test"}

// The embedded payloads are the envelope's golden inputs, byte for byte.
func TestGoldenCopies(t *testing.T) {
	for _, name := range GoldenMessages {
		ours, err := golden.ReadFile("golden/" + name + ".json")
		if err != nil {
			t.Fatal(err)
		}
		theirs, err := os.ReadFile("../envelope/testdata/" + name + ".json")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ours, theirs) {
			t.Errorf("golden/%s.json differs from core/internal/envelope/testdata: copy it again", name)
		}
	}
}

// Every generated event is unique, decrypts, verifies and normalizes to a
// message event keyed as the generator says.
func TestSourceEventsAreValidLarkEvents(t *testing.T) {
	src, err := NewSource(testApp, "t", 3)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	chats := map[string]bool{}
	for range 2 * len(GoldenMessages) {
		ev := src.Next()
		if seen[ev.Key] {
			t.Fatalf("duplicate key %s", ev.Key)
		}
		seen[ev.Key] = true
		body, h, err := Seal(testApp, ev.Plain)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := h.Get(ingest.HeaderSignature), ingest.EventSignature(h.Get(ingest.HeaderTimestamp), h.Get(ingest.HeaderNonce), testApp.EncryptKey, body); got != want {
			t.Fatalf("signature %s, want %s", got, want)
		}
		var probe envelope.Probe
		if err := jsonUnmarshal(body, &probe); err != nil || probe.Encrypt == "" {
			t.Fatalf("body is not an encrypted envelope: %s", body)
		}
		plain, err := ingest.Decrypt(probe.Encrypt, testApp.EncryptKey)
		if err != nil || !bytes.Equal(plain, ev.Plain) {
			t.Fatalf("decrypt: %v", err)
		}
		got, err := envelope.Normalize(testApp.ID, plain)
		if err != nil {
			t.Fatal(err)
		}
		if got.GetDedupKey() != ev.Key || got.GetMessage().GetMessageId() != ev.Key || got.GetAppId() != testApp.ID {
			t.Fatalf("normalized %v, key %s", got, ev.Key)
		}
		chats[got.GetChatId()] = true
	}
	if len(chats) != 3 {
		t.Fatalf("events spread over %d chats, want 3", len(chats))
	}
}

// The generator counts what the server answered, retries non-200s, and
// feeds the ledger.
func TestDriveAccounting(t *testing.T) {
	var calls atomic.Int64
	var mu sync.Mutex
	keys := map[string]int{}
	refusedOnce := map[string]bool{}
	in := IngestHandler(testApp)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		body, _ := io.ReadAll(r.Body)
		var probe envelope.Probe
		_ = jsonUnmarshal(body, &probe)
		plain, _ := ingest.Decrypt(probe.Encrypt, testApp.EncryptKey)
		ev, err := envelope.Normalize(testApp.ID, plain)
		if err != nil {
			t.Errorf("undecodable request: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		mu.Lock()
		keys[ev.GetDedupKey()]++
		seen := keys[ev.GetDedupKey()]
		if seen == 1 && len(keys)%5 == 0 {
			// Every fifth event fails its first post only: a failure per
			// request count could hit the same event on every retry.
			refusedOnce[ev.GetDedupKey()] = true
			mu.Unlock()
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		in.ServeHTTP(w, r)
	}))
	defer srv.Close()
	src, err := NewSource(testApp, "d", 10)
	if err != nil {
		t.Fatal(err)
	}
	l := NewLedger()
	res, err := Drive(t.Context(), src, Load{URL: srv.URL + "/lark/events", App: testApp, Concurrency: 4, Events: 200, Retries: 3, Ledger: l})
	if err != nil {
		t.Fatal(err)
	}
	if res.Posted != 200 || res.Accepted != 200 || res.Failed != 0 {
		t.Fatalf("posted %d, accepted %d, failed %d", res.Posted, res.Accepted, res.Failed)
	}
	if res.Requests != int(calls.Load()) || res.Statuses[200] != 200 || res.Statuses[503] != len(refusedOnce) || res.Statuses[503] != res.Requests-200 {
		t.Fatalf("requests %d (server saw %d), statuses %v", res.Requests, calls.Load(), res.Statuses)
	}
	if res.Ack.N != 200 || res.PerSecond <= 0 {
		t.Fatalf("ack %+v, %v/s", res.Ack, res.PerSecond)
	}
	if a := l.Account(nil); a.Posted != 200 || a.Accepted != 200 || a.Lost != 200 {
		t.Fatalf("ledger %+v", a)
	}
	if len(keys) != 200 {
		t.Fatalf("server saw %d distinct events", len(keys))
	}
}

// Open loop: about Rate × Duration events, no more.
func TestDriveOpenLoop(t *testing.T) {
	srv := httptest.NewServer(BareResponder())
	defer srv.Close()
	src, err := NewSource(testApp, "o", 10)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Drive(t.Context(), src, Load{URL: srv.URL, App: testApp, Concurrency: 4, Rate: 500, Duration: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// The pacing caps what is sent; how much of it a loaded machine manages
	// to send is not this test's business.
	if res.Posted < 1 || res.Posted > 110 {
		t.Fatalf("posted %d in 200 ms at 500/s, want at most about 100", res.Posted)
	}
	if res.Accepted != res.Posted {
		t.Fatalf("accepted %d of %d", res.Accepted, res.Posted)
	}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func TestLoadResultMerge(t *testing.T) {
	var r LoadResult
	r.merge(LoadResult{Posted: 10, Accepted: 9, Failed: 1, Requests: 12, Statuses: map[int]int{200: 9, 503: 3}, Elapsed: time.Second})
	r.merge(LoadResult{Posted: 5, Accepted: 5, Requests: 5, Statuses: map[int]int{200: 5}, Elapsed: time.Second})
	if r.Posted != 15 || r.Accepted != 14 || r.Failed != 1 || r.Requests != 17 || r.Statuses[200] != 14 || r.Statuses[503] != 3 {
		t.Fatalf("merged %+v", r)
	}
	if r.Elapsed != 2*time.Second || r.PerSecond != 7 {
		t.Fatalf("merged rate %v over %v", r.PerSecond, r.Elapsed)
	}
}
