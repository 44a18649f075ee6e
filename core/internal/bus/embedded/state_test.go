package embedded

import (
	"testing"
	"time"
)

// State keys survive a restart, expire, and expired ones are swept; a key
// rewritten with a later expiry survives the sweep of its old expiry.
func TestStatePersistsAndExpires(t *testing.T) {
	dir := t.TempDir()
	b := openTest(t, Config{Dir: dir})
	s := b.State("dedup")
	now := time.Now()
	if err := s.Put("forever", []byte("v1"), time.Time{}, false); err != nil {
		t.Fatal(err)
	}
	if err := s.Put("short", []byte("v2"), now.Add(time.Minute), true); err != nil {
		t.Fatal(err)
	}
	if err := s.Put("extended", []byte("lease"), now.Add(time.Minute), false); err != nil {
		t.Fatal(err)
	}
	if err := s.Put("extended", []byte("done"), now.Add(time.Hour), true); err != nil {
		t.Fatal(err)
	}
	if err := b.State("other").Put("short", []byte("x"), time.Time{}, true); err != nil {
		t.Fatal(err)
	}
	closeBus(t, b)

	b = openTest(t, Config{Dir: dir})
	defer closeBus(t, b)
	s = b.State("dedup")
	get := func(key string) string {
		t.Helper()
		v, ok, err := s.Get(key)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return "<none>"
		}
		return string(v)
	}
	for key, want := range map[string]string{"forever": "v1", "short": "v2", "extended": "done", "absent": "<none>"} {
		if got := get(key); got != want {
			t.Errorf("after restart %s = %s, want %s", key, got, want)
		}
	}
	later := now.Add(2 * time.Minute)
	b.now = func() time.Time { return later }
	if got := get("short"); got != "<none>" {
		t.Errorf("expired key read %s", got)
	}
	if err := b.sweepState(later); err != nil {
		t.Fatal(err)
	}
	b.now = time.Now
	for key, want := range map[string]string{"forever": "v1", "short": "<none>", "extended": "done"} {
		if got := get(key); got != want {
			t.Errorf("after the sweep %s = %s, want %s", key, got, want)
		}
	}
	if v, ok, _ := b.State("other").Get("short"); !ok || string(v) != "x" {
		t.Errorf("another space's key was touched: %q %v", v, ok)
	}
	if err := s.Delete("forever"); err != nil {
		t.Fatal(err)
	}
	if got := get("forever"); got != "<none>" {
		t.Errorf("deleted key read %s", got)
	}
}

// Empty tells whether a space holds any key: the nonce cache reads the
// disk only if an earlier process left some.
func TestStateEmpty(t *testing.T) {
	b := openTest(t, Config{})
	defer closeBus(t, b)
	nonces, other := b.State("nonce"), b.State("nonc")
	if empty, err := nonces.Empty(); !empty || err != nil {
		t.Fatalf("a new space: Empty = %v %v, want true", empty, err)
	}
	if err := other.Put("x", nil, time.Time{}, false); err != nil {
		t.Fatal(err)
	}
	if empty, _ := nonces.Empty(); !empty {
		t.Fatal("a key of another space (a name prefix of this one) made it non-empty")
	}
	if err := nonces.Put("app:n1", nil, time.Now().Add(time.Hour), false); err != nil {
		t.Fatal(err)
	}
	if empty, err := nonces.Empty(); empty || err != nil {
		t.Fatalf("after a Put: Empty = %v %v, want false", empty, err)
	}
}

// Horizon is the latest expiry of the space's keys, whatever other spaces
// hold: zero when empty, far in the future when a key never expires.
func TestStateHorizon(t *testing.T) {
	b := openTest(t, Config{Dir: t.TempDir()})
	defer closeBus(t, b)
	horizon := func(s *State) time.Time {
		t.Helper()
		h, err := s.Horizon()
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	s := b.State("dedup")
	if h := horizon(s); !h.IsZero() {
		t.Fatalf("empty space: %v", h)
	}
	now := time.Now()
	for key, exp := range map[string]time.Time{"a": now.Add(time.Hour), "b": now.Add(3 * time.Hour), "c": now.Add(time.Minute)} {
		if err := s.Put(key, nil, exp, false); err != nil {
			t.Fatal(err)
		}
	}
	// Later keys of other spaces, one a prefix of this one's name.
	if err := b.State("nonce").Put("n", nil, now.Add(5*time.Hour), false); err != nil {
		t.Fatal(err)
	}
	if err := b.State("dedupx").Put("n", nil, now.Add(6*time.Hour), false); err != nil {
		t.Fatal(err)
	}
	if h := horizon(s); !h.Equal(time.Unix(0, now.Add(3*time.Hour).UnixNano())) {
		t.Fatalf("horizon %v, want %v", h, now.Add(3*time.Hour))
	}
	never := b.State("never")
	if err := never.Put("k", nil, time.Time{}, false); err != nil {
		t.Fatal(err)
	}
	if h := horizon(never); h.Before(now.Add(100 * 365 * 24 * time.Hour)) {
		t.Fatalf("a key that never expires: horizon %v", h)
	}
}
