package bench

import (
	"net/http"
	"sync/atomic"
	"testing"
)

var benchApp = App{ID: "cli_bench", VerificationToken: "vt-bench", EncryptKey: "ek-bench"}

// benchServe runs h on b.N freshly sealed events (sealing is not timed).
func benchServe(b *testing.B, h http.Handler) {
	src, err := NewSource(benchApp, "b", 50)
	if err != nil {
		b.Fatal(err)
	}
	reqs, err := SealMany(src, benchApp, b.N)
	if err != nil {
		b.Fatal(err)
	}
	p := Prepare(reqs)
	b.ReportAllocs()
	b.ResetTimer()
	if _, err := ServePrepared(h, p); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkIngestHandler is larkway's verify + decrypt + normalize (+ the
// bus encoding) per event, in memory, over a bus that stores nothing.
func BenchmarkIngestHandler(b *testing.B) { benchServe(b, IngestHandler(benchApp)) }

// BenchmarkSDKDispatcher is oapi-sdk-go's httpserverext + dispatcher doing
// the same work per event (verify, decrypt, parse, a no-reply handler).
func BenchmarkSDKDispatcher(b *testing.B) {
	var n atomic.Int64
	benchServe(b, SDKDispatcher(benchApp, &n))
}

// BenchmarkSeal is the generator's own per-event cost (encrypt + sign).
func BenchmarkSeal(b *testing.B) {
	src, err := NewSource(benchApp, "b", 50)
	if err != nil {
		b.Fatal(err)
	}
	ev := src.Next()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Seal(benchApp, ev.Plain); err != nil {
			b.Fatal(err)
		}
	}
}
