package bench

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestParsePhases(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []Phase
		wantErr bool
	}{
		{"closed loop", "30s@0", []Phase{{0, 30 * time.Second}}, false},
		{"step", "10s@5000, 10s@15000,10s@5000", []Phase{{5000, 10 * time.Second}, {15000, 10 * time.Second}, {5000, 10 * time.Second}}, false},
		{"no rate", "10s", nil, true},
		{"bad duration", "x@10", nil, true},
		{"zero duration", "0s@10", nil, true},
		{"negative rate", "1s@-1", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePhases(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
}

// Every request Sustain sends is counted once, by its answer, and the
// seconds it reports add up to them (the last, partial one included).
func TestSustainAccounting(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch calls.Add(1) % 3 {
		case 0:
			w.WriteHeader(http.StatusServiceUnavailable)
		case 1:
			w.WriteHeader(http.StatusBadRequest)
		default:
			w.WriteHeader(http.StatusOK)
		}
	}))
	defer srv.Close()
	src, err := NewSource(testApp, "s", 10)
	if err != nil {
		t.Fatal(err)
	}
	var sum Second
	reports := 0
	var idsMu sync.Mutex
	ids := map[string]int{}
	err = Sustain(t.Context(), src, srv.URL, testApp, 4, []Phase{{Rate: 0, Duration: 300 * time.Millisecond}, {Rate: 2000, Duration: 300 * time.Millisecond}},
		func(s Second) {
			reports++
			sum.Offered += s.Offered
			sum.Unsent += s.Unsent
			sum.Accepted += s.Accepted
			sum.Rejected += s.Rejected
			sum.Failed += s.Failed
		}, func(id string) {
			idsMu.Lock()
			defer idsMu.Unlock()
			ids[id]++
		})
	if err != nil {
		t.Fatal(err)
	}
	if reports == 0 {
		t.Fatal("no report: the final, partial second must be reported")
	}
	answered := sum.Accepted + sum.Rejected + sum.Failed
	if int64(answered) != calls.Load() || answered+sum.Unsent != sum.Offered {
		t.Fatalf("server saw %d; reported offered %d unsent %d accepted %d rejected %d failed %d",
			calls.Load(), sum.Offered, sum.Unsent, sum.Accepted, sum.Rejected, sum.Failed)
	}
	if sum.Accepted == 0 || sum.Rejected == 0 || sum.Failed == 0 {
		t.Fatalf("every answer kind was expected: %+v", sum)
	}
	// Each 200 names its own event, once.
	if len(ids) != sum.Accepted {
		t.Fatalf("%d distinct accepted ids reported, %d accepted", len(ids), sum.Accepted)
	}
	for id, n := range ids {
		if n != 1 || !strings.HasPrefix(id, "ev_bench_s") {
			t.Fatalf("accepted id %q reported %d times, want once, with the run's prefix", id, n)
		}
	}
}

// The sustained scenario's ledger tells lost and duplicated events apart by
// id, across the generator runs of one target: a delivery that a duplicate
// would hide from a count (accepted = delivered) is still a loss.
func TestIDLedgerCountsPerEvent(t *testing.T) {
	l := newIDLedger()
	dir := t.TempDir()
	write := func(name string, ids ...string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(strings.Join(ids, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// The same sequence number in two runs is two events.
	over := write("over", "ev_bench_ab12cd_overload_1", "ev_bench_ab12cd_overload_2", "ev_bench_ab12cd_overload_z")
	step := write("step", "ev_bench_ab12cd_step_1", "ev_bench_ab12cd_step_2")
	l.addRun("ab12cd_overload_", over)
	l.addRun("ab12cd_step_", step)
	l.delivered("ev_bench_ab12cd_overload_1")
	l.delivered("ev_bench_ab12cd_overload_2")
	l.delivered("ev_bench_ab12cd_overload_2") // twice: a duplicate
	l.delivered("ev_bench_ab12cd_overload_z")
	l.delivered("ev_bench_ab12cd_step_1")
	// step_2 never delivered: lost, though deliveries (6) outnumber
	// accepted events (5).
	l.delivered("ev_bench_ab12cd_step_9")     // delivered without a 200
	l.delivered("ev_bench_ffffff_overload_1") // no run of this target's
	if err := l.accepted(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(over); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the accepted ids' file is still there once read: %v", err)
	}
	got := l.Account(nil)
	want := Accounting{Posted: 5, Accepted: 5, Replied: 4, Lost: 1, Duplicated: 1, Unexpected: 1}
	if got != want {
		t.Fatalf("Account = %+v\nwant      %+v", got, want)
	}
	if n := l.unknown.Load(); n != 1 {
		t.Fatalf("unknown ids %d, want 1", n)
	}
	l.addRun("cd34ef_overload_", write("bad", "ev_bench_other_1"))
	if err := l.accepted(); err == nil {
		t.Fatal("accepted took an id of no run of the target's")
	}
}
