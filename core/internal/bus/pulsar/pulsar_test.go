package pulsar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	pulsarclient "github.com/apache/pulsar-client-go/pulsar"

	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/bus/bustest"
	"github.com/larkway/larkway/core/internal/testenv"
)

// testLogger logs warnings to stderr: the client logs from its own goroutines,
// which may outlive a test, so it cannot log through t.
func testLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// TestConformance runs the bus suite against the real broker; it fails when
// none is running.
func TestConformance(t *testing.T) {
	url := testenv.PulsarURL(t)
	bustest.Run(t, func(t *testing.T) bus.Bus { return newTestBus(t, Config{URL: url}) })
}

// TestConformanceBatching runs the suite with batching on, as
// bus.pulsar.batching: true configures the core: nacks, redelivery and dead
// letters must stay per message (the broker runs with batch-index
// acknowledgment).
func TestConformanceBatching(t *testing.T) {
	url := testenv.PulsarURL(t)
	bustest.Run(t, func(t *testing.T) bus.Bus { return newTestBus(t, Config{URL: url, Batching: true}) })
}

func newTestBus(t *testing.T, cfg Config) *Bus {
	t.Helper()
	if cfg.OperationTimeout == 0 {
		cfg.OperationTimeout = 20 * time.Second
	}
	b, err := New(cfg, testLogger())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return b
}

// subscribed returns a bus on cfg with a consumer of a new topic, both
// closed when t ends, and a context bounded by the receive timeout.
func subscribed(t *testing.T, cfg Config) (context.Context, *Bus, bus.Consumer, string) {
	t.Helper()
	b := newTestBus(t, cfg)
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	ctx, cancel := context.WithTimeout(t.Context(), bustest.ReceiveTimeout)
	t.Cleanup(cancel)
	topic := testenv.Name(t, "topic")
	c, err := b.Subscribe(ctx, bus.SubscribeOptions{Topic: topic, Subscription: "sub"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return ctx, b, c, topic
}

// Compressed batches arrive as published, properties and keys included.
func TestCompressionRoundTrips(t *testing.T) {
	for _, comp := range []string{"lz4", "zstd"} {
		t.Run(comp, func(t *testing.T) {
			ctx, b, c, topic := subscribed(t, Config{URL: testenv.PulsarURL(t), Batching: true, Compression: comp})
			const n = 4
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					p := []byte(strings.Repeat(strconv.Itoa(i), 500))
					if err := b.Publish(ctx, topic, bus.Message{Key: "k", Payload: p, Properties: map[string]string{"i": strconv.Itoa(i)}}); err != nil {
						t.Errorf("Publish: %v", err)
					}
				})
			}
			wg.Wait()
			for range n {
				d, err := c.Receive(ctx)
				if err != nil {
					t.Fatal(err)
				}
				i := d.Properties["i"]
				if d.Key != "k" || string(d.Payload) != strings.Repeat(i, 500) {
					t.Errorf("received key %q, %d bytes for property %q", d.Key, len(d.Payload), i)
				}
				if err := d.Ack(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// With Batching, concurrent publishes of one key share a batch, and each
// message in it gets its own ID.
func TestBatchingSharesEntries(t *testing.T) {
	const n = 8
	ctx, b, c, topic := subscribed(t, Config{URL: testenv.PulsarURL(t), Batching: true, BatchingMaxPublishDelay: 50 * time.Millisecond})

	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := b.Publish(ctx, topic, bus.Message{Key: "k", Payload: []byte(strconv.Itoa(i))}); err != nil {
				t.Errorf("Publish: %v", err)
			}
		})
	}
	wg.Wait()
	ids := make(map[string]bool)
	entries := make(map[string]int)
	for range n {
		d, err := c.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ids[d.ID] = true
		entries[d.ID[:strings.LastIndexByte(d.ID, ':')]]++
		d.Ack()
	}
	if len(ids) != n {
		t.Errorf("%d distinct IDs for %d messages: %v", len(ids), n, ids)
	}
	if len(entries) == n {
		t.Errorf("no two messages shared a batch: entries %v", entries)
	}
}

// With no broker listening, Ping and Publish fail with ErrUnavailable.
func TestUnavailable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now

	b, err := New(Config{URL: "pulsar://" + addr, ConnectionTimeout: time.Second, OperationTimeout: 2 * time.Second}, testLogger())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer b.Close(context.Background())

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := b.Ping(ctx); !errors.Is(err, bus.ErrUnavailable) {
		t.Errorf("Ping = %v, want ErrUnavailable", err)
	}
	if err := b.Publish(ctx, "events", bus.Message{Key: "k", Payload: []byte("x")}); !errors.Is(err, bus.ErrUnavailable) {
		t.Errorf("Publish = %v, want ErrUnavailable", err)
	}
	// A ctx that ends first bounds the call.
	short, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	if err := b.Publish(short, "events", bus.Message{Key: "k"}); !errors.Is(err, bus.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Publish with a short ctx = %v, want ErrUnavailable and DeadlineExceeded", err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{URL: "pulsar://127.0.0.1:6650"}, true},
		{"tls", Config{URL: "pulsar+ssl://broker:6651", TopicPrefix: "persistent://larkway/prod/"}, true},
		{"non-persistent", Config{URL: "pulsar://b:6650", TopicPrefix: "non-persistent://public/default/"}, true},
		{"no url", Config{}, false},
		{"http url", Config{URL: "http://127.0.0.1:8080"}, false},
		{"prefix without slash", Config{URL: "pulsar://b:6650", TopicPrefix: "persistent://public/default"}, false},
		{"prefix without namespace", Config{URL: "pulsar://b:6650", TopicPrefix: "persistent://public/"}, false},
		{"prefix bad domain", Config{URL: "pulsar://b:6650", TopicPrefix: "durable://public/default/"}, false},
		{"negative timeout", Config{URL: "pulsar://b:6650", OperationTimeout: -time.Second}, false},
		{"negative queue", Config{URL: "pulsar://b:6650", ReceiverQueueSize: -1}, false},
		{"lz4", Config{URL: "pulsar://b:6650", Compression: "lz4"}, true},
		{"zstd", Config{URL: "pulsar://b:6650", Compression: "zstd"}, true},
		{"unknown compression", Config{URL: "pulsar://b:6650", Compression: "snappy"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if (err == nil) != tc.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tc.ok)
			}
			if _, err := New(tc.cfg, nil); (err == nil) != tc.ok {
				t.Errorf("New() error = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestEscapeTopic(t *testing.T) {
	tests := []struct{ in, want string }{
		{"events.cli_x", "events.cli_x"},
		{"events.cli_a1b2-DLQ", "events.cli_a1b2-DLQ"},
		{"dispatch:v1", "dispatch:v1"},
		{"a/b", "a=2Fb"},
		{"a=b", "a=3Db"},
		{"a b#c", "a=20b=23c"},
		{"über", "=C3=BCber"},
		{"x-partition-1", "x=2Dpartition-1"},
		{"x-partition-partition-", "x=2Dpartition=2Dpartition-"},
		{".hidden", "=2Ehidden"},
		{"..", "=2E."},
		{"__change_events", "=5F_change_events"},
		{"a_", "a_"},
	}
	for _, tc := range tests {
		if got := EscapeTopic(tc.in); got != tc.want {
			t.Errorf("EscapeTopic(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzEscapeTopic checks that escaped names are legal Pulsar names, free of
// partition suffixes, and decode back to the input (so distinct bus topics
// never share a Pulsar topic).
func FuzzEscapeTopic(f *testing.F) {
	for _, s := range []string{"events.cli_x", "a/b", "a=2Fb", "-partition-", "x-partition-0", "__x", ".", "日本", "=", "a=3D"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := EscapeTopic(in)
		for i := 0; i < len(out); i++ {
			c := out[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("_-=:.", c) >= 0) {
				t.Fatalf("EscapeTopic(%q) = %q has illegal byte %q", in, out, c)
			}
		}
		if strings.Contains(out, "-partition-") {
			t.Fatalf("EscapeTopic(%q) = %q contains -partition-", in, out)
		}
		if strings.HasPrefix(out, ".") || strings.HasPrefix(out, "_") {
			t.Fatalf("EscapeTopic(%q) = %q starts with %q", in, out, out[0])
		}
		if back, err := unescapeTopic(out); err != nil || back != in {
			t.Fatalf("unescape(EscapeTopic(%q) = %q) = %q, %v", in, out, back, err)
		}
	})
}

func unescapeTopic(s string) (string, error) {
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '=' {
			sb.WriteByte(s[i])
			continue
		}
		if i+3 > len(s) {
			return "", errors.New("truncated escape")
		}
		v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return "", err
		}
		sb.WriteByte(byte(v))
		i += 2
	}
	return sb.String(), nil
}

func TestBacklog(t *testing.T) {
	b, err := New(Config{URL: testenv.PulsarURL(t), AdminURL: testenv.PulsarAdminURL(t)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	ctx := context.Background()
	topic := testenv.Name(t, "backlog")
	c, err := b.Subscribe(ctx, bus.SubscribeOptions{Topic: topic, Subscription: "s"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	for range 3 {
		if err := b.Publish(ctx, topic, bus.Message{Key: "k", Payload: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 10*time.Second, "backlog not reported", func() bool {
		n, err := b.Backlog(ctx, topic, "s")
		return err == nil && n == 3
	})
	if n, err := b.Backlog(ctx, topic, "nobody"); err != nil || n != 0 {
		t.Fatalf("unknown subscription: %d %v", n, err)
	}
}

// A delivery's ID names the batch index too, which tells the messages of one
// batch apart, and formats as fmt did before.
func TestMessageID(t *testing.T) {
	tests := []struct {
		name             string
		ledger, entry    int64
		batch, partition int32
		want             string
	}{
		{"single message", 12, 345, -1, -1, "12:345:-1:-1"},
		{"in a batch", 12, 345, 3, -1, "12:345:-1:3"},
		{"partitioned", 7, 0, 0, 2, "7:0:2:0"},
		{"large ids", 1 << 40, 1<<31 + 5, 999, 0, fmt.Sprintf("%d:%d:0:999", int64(1)<<40, int64(1)<<31+5)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mid := pulsarclient.NewMessageID(tt.ledger, tt.entry, tt.batch, tt.partition)
			if got := messageID(mid); got != tt.want {
				t.Errorf("messageID = %q, want %q", got, tt.want)
			}
		})
	}
}
