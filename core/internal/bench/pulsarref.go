package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/larkway/larkway/core/internal/bus"
	buspulsar "github.com/larkway/larkway/core/internal/bus/pulsar"
	"github.com/larkway/larkway/core/internal/envelope"
)

// brokerPID is the local Pulsar broker's JVM as scripts/pulsar.sh runs it
// (its pid file under $LARKWAY_RUN_DIR, default /tmp/larkway-run), or 0:
// the broker's CPU per event is then not reported.
func brokerPID() int {
	root := os.Getenv("LARKWAY_RUN_DIR")
	if root == "" {
		root = "/tmp/larkway-run"
	}
	b, err := os.ReadFile(filepath.Join(root, "pulsar", "pulsar.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmd), "pulsar") {
		return 0
	}
	return pid
}

// storedSize is what ingest stores per event of app, against the decrypted
// body, averaged over 100 events: the payload alone, and with the key and
// properties the broker keeps beside it.
type storedSize struct {
	Body, Payload, WithMeta float64
	sample                  []bus.Message // the events as stored, for the plain producer
}

func (r *runner) storedSize(app App) (storedSize, error) {
	var s storedSize
	evs, err := r.events(app, 100)
	if err != nil {
		return s, err
	}
	for _, ev := range evs {
		m := envelope.EncodeRaw(nil, app.ID, ev.GetRawJson(), ev)
		s.sample = append(s.sample, m)
		s.Body += float64(len(ev.GetRawJson()))
		s.Payload += float64(len(m.Payload))
		meta := len(m.Key)
		for k, v := range m.Properties {
			meta += len(k) + len(v)
		}
		s.WithMeta += float64(len(m.Payload) + meta)
	}
	n := float64(len(evs))
	s.Body, s.Payload, s.WithMeta = s.Body/n, s.Payload/n, s.WithMeta/n
	return s, nil
}

// PlainProducerResult is the plain producer's run: larkway's producer
// settings and stored messages, no webhook in front.
type PlainProducerResult struct {
	Compression string  `json:"compression"`
	PerSecond   float64 `json:"per_second"`
	P50MS       float64 `json:"p50_ms"`
	P99MS       float64 `json:"p99_ms"`
	// BrokerUS is the broker JVM's CPU per published event (0: unknown).
	BrokerUS float64 `json:"broker_us"`
	// ClientUS is the bench process's CPU per published event: the Pulsar
	// client (producer) alone, what larkway's core pays on top of HTTP,
	// verification, decryption, normalization and dispatch.
	ClientUS float64 `json:"client_us"`
}

// plainProducer publishes the sample messages to a fresh topic through the
// bus package as larkway's core does (same Config but compression: the
// core's default of one entry per event, no batching; SendAsync awaited),
// from conns goroutines for d.
func (r *runner) plainProducer(ctx context.Context, sample []bus.Message, compression string, conns int, d time.Duration) (PlainProducerResult, error) {
	res := PlainProducerResult{Compression: compression}
	b, err := buspulsar.New(buspulsar.Config{URL: r.o.PulsarURL, OperationTimeout: 5 * time.Second,
		Compression: compression}, r.o.Logger)
	if err != nil {
		return res, err
	}
	defer b.Close(context.WithoutCancel(ctx))
	topic := "bench-plain-" + r.runTag() + compression
	// The producer's creation is not timed.
	if err := b.Publish(ctx, topic, sample[0]); err != nil {
		return res, fmt.Errorf("plain producer: %w", err)
	}
	pid := brokerPID()
	var (
		n    atomic.Int64
		mu   sync.Mutex
		lats []time.Duration
		wg   sync.WaitGroup
		perr atomic.Pointer[error]
	)
	rctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	self0, _ := cpuTimes()
	cpu0, start := procCPU(pid), time.Now()
	for g := range conns {
		wg.Go(func() {
			local := make([]time.Duration, 0, 4096)
			for i := g; rctx.Err() == nil; i += conns {
				t0 := time.Now()
				if err := b.Publish(rctx, topic, sample[i%len(sample)]); err != nil {
					if rctx.Err() == nil {
						perr.Store(&err)
					}
					break
				}
				local = append(local, time.Since(t0))
				n.Add(1)
			}
			mu.Lock()
			lats = append(lats, local...)
			mu.Unlock()
		})
	}
	wg.Wait()
	el, cpu := time.Since(start).Seconds(), procCPU(pid)-cpu0
	self1, _ := cpuTimes()
	if p := perr.Load(); p != nil {
		return res, fmt.Errorf("plain producer: %w", *p)
	}
	res.PerSecond = float64(n.Load()) / el
	if pid > 0 && n.Load() > 0 {
		res.BrokerUS = float64(cpu.Microseconds()) / float64(n.Load())
	}
	if n.Load() > 0 {
		res.ClientUS = float64((self1 - self0).Microseconds()) / float64(n.Load())
	}
	lat := Summarize(lats)
	res.P50MS, res.P99MS = lat.P50, lat.P99
	return res, nil
}

// pulsarRefs measures, before larkway's Pulsar core starts, what ingest
// stores per event and the plain producer with larkway's settings
// (uncompressed, then LZ4 and ZSTD for the broker's CPU), and returns the
// uncompressed run: the reference larkway's accepted rate is held to.
func (r *runner) pulsarRefs(ctx context.Context, app App) (PlainProducerResult, error) {
	ss, err := r.storedSize(app)
	if err != nil {
		return PlainProducerResult{}, err
	}
	r.logf("pulsar: stored %.0f bytes per %.0f-byte body (%.3f×); with key and properties %.0f (%.3f×)",
		ss.Payload, ss.Body, ss.Payload/ss.Body, ss.WithMeta, ss.WithMeta/ss.Body)
	r.rep.add(r.run, "sustained.pulsar.stored_vs_body", "bus payload per event ÷ Lark's decrypted body (goal ≤ 1.1×)", "×", ss.Payload/ss.Body, ss)
	r.rep.add(r.run, "sustained.pulsar.stored_meta_vs_body", "bus payload + key + properties per event ÷ the body", "×", ss.WithMeta/ss.Body, nil)
	var plain PlainProducerResult
	for _, comp := range []string{"none", "lz4", "zstd"} {
		d := r.o.SustainDuration
		if comp != "none" {
			d = max(r.o.SustainDuration/3, 5*time.Second)
		}
		res, err := r.plainProducer(ctx, ss.sample, comp, r.o.SustainConns, d)
		if err != nil {
			return plain, err
		}
		r.logf("pulsar plain producer, %s: %.0f events/s, publish p50 %.1f ms p99 %.1f ms, broker %.1f µs/event, client %.1f µs/event",
			comp, res.PerSecond, res.P50MS, res.P99MS, res.BrokerUS, res.ClientUS)
		r.rep.add(r.run, "sustained.pulsar.plain."+comp, fmt.Sprintf("plain Go producer, larkway's settings, %s compression, %d in flight: published/s", comp, r.o.SustainConns), "events/s", res.PerSecond, res)
		r.rep.add(r.run, "sustained.pulsar.plain."+comp+".broker", "the broker's CPU per event, plain producer, "+comp, "µs", res.BrokerUS, nil)
		r.rep.add(r.run, "sustained.pulsar.plain."+comp+".client", "the producer's own CPU per event (bench process), plain producer, "+comp, "µs", res.ClientUS, nil)
		r.rep.add(r.run, "sustained.pulsar.plain."+comp+".p99", "plain producer publish p99, "+comp, "ms", res.P99MS, nil)
		if comp == "none" {
			plain = res
		}
	}
	return plain, nil
}

// pulsarAfter follows larkway's Pulsar overload and step: the broker's
// CPU and the accepted rate against the plain producer of the same round,
// then ingest's ack p99 at 5 000 events/s offered.
func (r *runner) pulsarAfter(ctx context.Context, t sustainTarget, res SustainedResult, plain PlainProducerResult) error {
	r.rep.add(r.run, "sustained.ingest.pulsar.broker", "the broker's CPU per event larkway accepted, overload steady state", "µs", res.BrokerUSPerEvent, nil)
	if plain.PerSecond > 0 {
		r.rep.add(r.run, "sustained.ingest.pulsar.vs_plain", "larkway's accepted/s ÷ the plain producer's published/s, same round (goal ≥ 0.8×)", "×",
			res.Accepted/plain.PerSecond, nil)
	}
	if _, err := r.drained(ctx, t); err != nil {
		return err
	}
	d := max(r.o.SustainDuration/3, 5*time.Second)
	rows, err := r.loadgen(ctx, t, "ack5000", []Phase{{Rate: 5000, Duration: d}}, 4*r.o.SustainConns)
	if err != nil {
		return err
	}
	var p99s, acc []float64
	for _, row := range rows {
		if !row.Partial && row.Accepted > 0 { // a second with no 200 has no p99
			p99s = append(p99s, row.AckP99)
			acc = append(acc, float64(row.Accepted))
		}
	}
	if len(p99s) == 0 {
		return fmt.Errorf("ack5000: no full second")
	}
	p99, accepted := Median(p99s), Median(acc)
	r.logf("pulsar at 5000/s offered: accepted %.0f/s, ack p99 %.1f ms (median of the seconds' p99s)", accepted, p99)
	r.rep.add(r.run, "sustained.ingest.pulsar.ack_p99_5000", "ingest ack p99 at 5 000 events/s offered (median of the seconds; goal < 20 ms)", "ms", p99, rows)
	r.rep.add(r.run, "sustained.ingest.pulsar.accepted_5000", "accepted/s at 5 000 events/s offered", "events/s", accepted, nil)
	_, err = r.drained(ctx, t)
	return err
}
