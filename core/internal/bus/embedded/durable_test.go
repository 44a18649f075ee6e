package embedded

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/testenv"
)

const waitFor = 30 * time.Second

func publishN(t *testing.T, b *Bus, topic string, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		m := bus.Message{Key: "k" + strconv.Itoa(i), Payload: []byte("m" + strconv.Itoa(i)), Properties: map[string]string{"i": strconv.Itoa(i)}}
		if err := b.Publish(t.Context(), topic, m); err != nil {
			t.Fatalf("Publish %d: %v", i, err)
		}
	}
}

func subscribeT(t *testing.T, b *Bus, opts bus.SubscribeOptions) bus.Consumer {
	t.Helper()
	c, err := b.Subscribe(t.Context(), opts)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	return c
}

func receiveT(t *testing.T, c bus.Consumer) *bus.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	d, err := c.Receive(ctx)
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	return d
}

func backlog(t *testing.T, b *Bus, topic, sub string) int64 {
	t.Helper()
	n, err := b.Backlog(t.Context(), topic, sub)
	if err != nil {
		t.Fatalf("Backlog: %v", err)
	}
	return n
}

// Positions, delivery counts and redelivery times survive a restart: an
// acked message is gone, a nacked one waits out its backoff, one handed out
// and never settled comes back with its delivery counted.
func TestRestartKeepsPositionsAttemptsAndBackoff(t *testing.T) {
	dir := t.TempDir()
	opts := bus.SubscribeOptions{Topic: "events", Subscription: "s", Backoff: func(int) time.Duration { return time.Hour }}
	b := openTest(t, Config{Dir: dir})
	c := subscribeT(t, b, opts)
	publishN(t, b, "events", 1, 5)
	for _, want := range []int{1, 2, 3} {
		d := receiveT(t, c)
		if d.Properties["i"] != strconv.Itoa(want) {
			t.Fatalf("received %v, want message %d", d.Properties, want)
		}
		switch want {
		case 1:
			if err := d.Ack(); err != nil {
				t.Fatal(err)
			}
		case 2:
			if err := d.Nack(); err != nil {
				t.Fatal(err)
			}
		case 3: // handed out, never settled
		}
	}
	if n := backlog(t, b, "events", "s"); n != 3 {
		t.Fatalf("backlog before restart = %d, want 3", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // message 3 stays unsettled
	if err := b.Close(ctx); err == nil {
		t.Fatal("Close with an unsettled delivery and a canceled ctx reported no error")
	}

	b = openTest(t, Config{Dir: dir})
	defer closeBus(t, b)
	if n := backlog(t, b, "events", "s"); n != 3 {
		t.Fatalf("backlog after restart = %d, want 3 (messages 2, 3, 4)", n)
	}
	c = subscribeT(t, b, opts)
	publishN(t, b, "events", 5, 6) // a marker: message 2 must not come before it
	for _, want := range []struct{ i, attempt int }{{3, 2}, {4, 1}, {5, 1}} {
		d := receiveT(t, c)
		if d.Properties["i"] != strconv.Itoa(want.i) || d.Attempt != want.attempt {
			t.Fatalf("received message %s attempt %d, want message %d attempt %d", d.Properties["i"], d.Attempt, want.i, want.attempt)
		}
		if err := d.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	if n := backlog(t, b, "events", "s"); n != 1 {
		t.Fatalf("backlog = %d, want 1 (message 2, waiting out its backoff)", n)
	}
}

// Seqs keep growing across restarts, also once retention deleted everything.
func TestIDsNeverRepeat(t *testing.T) {
	dir := t.TempDir()
	b := openTest(t, Config{Dir: dir, RetentionAge: time.Nanosecond})
	publishN(t, b, "events", 0, 3)
	b.now = func() time.Time { return time.Now().Add(time.Hour) }
	if err := b.enforceRetention(); err != nil {
		t.Fatal(err)
	}
	if n := replayAll(t, b, "events"); len(n) != 0 {
		t.Fatalf("retention left %v", n)
	}
	closeBus(t, b)

	b = openTest(t, Config{Dir: dir})
	defer closeBus(t, b)
	c := subscribeT(t, b, bus.SubscribeOptions{Topic: "events", Subscription: "s"})
	publishN(t, b, "events", 3, 4)
	d := receiveT(t, c)
	if d.ID != "4" {
		t.Errorf("ID after restart = %q, want 4", d.ID)
	}
	if err := d.Ack(); err != nil {
		t.Fatal(err)
	}
}

// The bus's own dead-lettering counts deliveries across a restart and keeps
// the message's key, payload and properties.
func TestDeadLetterAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	opts := bus.SubscribeOptions{Topic: "events", Subscription: "s", MaxDeliveries: 2, Backoff: func(int) time.Duration { return 0 }}
	b := openTest(t, Config{Dir: dir})
	subscribeT(t, b, bus.SubscribeOptions{Topic: opts.DeadLetter(), Subscription: "reader"})
	c := subscribeT(t, b, opts)
	publishN(t, b, "events", 7, 8)
	if err := receiveT(t, c).Nack(); err != nil {
		t.Fatal(err)
	}
	closeBus(t, b)

	b = openTest(t, Config{Dir: dir})
	defer closeBus(t, b)
	dlq := subscribeT(t, b, bus.SubscribeOptions{Topic: opts.DeadLetter(), Subscription: "reader"})
	c = subscribeT(t, b, opts)
	d := receiveT(t, c)
	if d.Attempt != 2 {
		t.Fatalf("Attempt after restart = %d, want 2", d.Attempt)
	}
	if err := d.Nack(); err != nil {
		t.Fatal(err)
	}
	dl := receiveT(t, dlq)
	want := map[string]string{"i": "7"}
	if dl.Key != "k7" || string(dl.Payload) != "m7" || !maps.Equal(dl.Properties, want) {
		t.Fatalf("dead letter = %q %q %v, want k7 m7 %v", dl.Key, dl.Payload, dl.Properties, want)
	}
	if err := dl.Ack(); err != nil {
		t.Fatal(err)
	}
	if n := backlog(t, b, "events", "s"); n != 0 {
		t.Fatalf("backlog after dead-lettering = %d, want 0", n)
	}
}

func replayAll(t *testing.T, b *Bus, topic string) []string {
	t.Helper()
	var ids []string
	err := b.Replay(t.Context(), topic, time.Time{}, time.Now().Add(24*time.Hour), func(s Stored) error {
		ids = append(ids, s.ID)
		return nil
	})
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	return ids
}

// Retention deletes history past its age or size, oldest first, and never
// a message a subscription has not acknowledged.
func TestRetention(t *testing.T) {
	tests := []struct {
		name   string
		cfg    Config
		later  time.Duration // the clock when retention runs
		remain []string
	}{
		{"young history is kept", Config{RetentionAge: time.Hour}, time.Minute,
			[]string{"1", "2", "3", "4", "5", "6", "7", "8"}},
		{"old history goes, unacknowledged stays", Config{RetentionAge: time.Hour}, 2 * time.Hour,
			[]string{"5", "6", "7", "8"}},
		{"history beyond the size goes oldest first", Config{RetentionAge: time.Hour, RetentionBytes: 60}, time.Minute,
			[]string{"3", "4", "5", "6", "7", "8"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := openTest(t, tc.cfg)
			defer closeBus(t, b)
			c := subscribeT(t, b, bus.SubscribeOptions{Topic: "events", Subscription: "s"})
			publishN(t, b, "events", 1, 9) // records of 27 bytes
			for range 4 {
				if err := receiveT(t, c).Ack(); err != nil {
					t.Fatal(err)
				}
			}
			// Message 6 is acknowledged too, but 5 is not: 6 stays.
			d5 := receiveT(t, c)
			if err := receiveT(t, c).Ack(); err != nil {
				t.Fatal(err)
			}
			b.now = func() time.Time { return time.Now().Add(tc.later) }
			if err := b.enforceRetention(); err != nil {
				t.Fatal(err)
			}
			if got := replayAll(t, b, "events"); fmt.Sprint(got) != fmt.Sprint(tc.remain) {
				t.Errorf("stored after retention: %v, want %v", got, tc.remain)
			}
			if err := d5.Ack(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Replay reads a time range of a topic's stored messages, acknowledged or
// not, even of a topic nobody subscribes to.
func TestReplayTimeRange(t *testing.T) {
	b := openTest(t, Config{})
	defer closeBus(t, b)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 5 {
		b.now = func() time.Time { return base.Add(time.Duration(i) * time.Minute) }
		publishN(t, b, "history", i, i+1)
	}
	var got []string
	err := b.Replay(t.Context(), "history", base.Add(time.Minute), base.Add(3*time.Minute), func(s Stored) error {
		got = append(got, string(s.Payload)+"@"+s.PublishTime.UTC().Format("15:04"))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := "[m1@00:01 m2@00:02]"; fmt.Sprint(got) != want {
		t.Errorf("replayed %v, want %s", got, want)
	}
	stop := errors.New("stop")
	if err := b.Replay(t.Context(), "history", base, base.Add(time.Hour), func(Stored) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("Replay = %v, want fn's error", err)
	}
}

// fullFS reports the disk as full while full is set.
type fullFS struct {
	vfs.FS
	full func() bool
}

func (f fullFS) GetDiskUsage(path string) (vfs.DiskUsage, error) {
	du, err := f.FS.GetDiskUsage(path)
	if f.full() {
		du.AvailBytes = 1 << 20
	}
	return du, err
}

// A nearly full disk refuses publishes with ErrUnavailable (ingest answers
// 503) instead of risking a write Pebble cannot recover from, and takes
// them again once there is room.
func TestFullDiskAnswersUnavailable(t *testing.T) {
	full := false
	b := openTest(t, Config{FS: fullFS{FS: vfs.Default, full: func() bool { return full }}})
	defer closeBus(t, b)
	c := subscribeT(t, b, bus.SubscribeOptions{Topic: "events", Subscription: "s"})
	full = true
	err := b.Publish(t.Context(), "events", bus.Message{Key: "k", Payload: []byte("lost?")})
	if !errors.Is(err, bus.ErrUnavailable) {
		t.Fatalf("Publish on a full disk = %v, want ErrUnavailable", err)
	}
	if err := b.Ping(t.Context()); !errors.Is(err, bus.ErrUnavailable) {
		t.Errorf("Ping on a full disk = %v, want ErrUnavailable", err)
	}
	// Admission (bus.Admitter) refuses before ingest verifies anything.
	room := b.Room()
	if room == nil {
		t.Fatal("Room on a full disk = nil, want a channel to wait on")
	}
	select {
	case <-room:
		t.Fatal("Room's channel closed while the disk is full")
	default:
	}
	full = false
	if room := b.Room(); room != nil {
		t.Fatal("Room once the disk has space = a channel, want nil")
	}
	publishN(t, b, "events", 1, 2)
	d := receiveT(t, c)
	if string(d.Payload) != "m1" {
		t.Errorf("received %q, want m1 (the refused publish stored nothing)", d.Payload)
	}
	if err := d.Ack(); err != nil {
		t.Fatal(err)
	}
	// Publishes reuse a recent check (publishSpace), but a disk that fills
	// is noticed within spaceCheckN publishes.
	full = true
	refused := false
	for range spaceCheckN + 1 {
		err := b.Publish(t.Context(), "events", bus.Message{Key: "k", Payload: []byte("x")})
		if errors.Is(err, bus.ErrUnavailable) {
			refused = true
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !refused {
		t.Fatalf("%d publishes after the disk filled, none refused", spaceCheckN+1)
	}
}

func TestConfigValidate(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no dir":             {},
		"negative retention": {Dir: "x", RetentionAge: -1},
		"negative reserve":   {Dir: "x", MinFreeBytes: -1},
	} {
		if _, err := Open(cfg, nil); err == nil {
			t.Errorf("%s: Open succeeded", name)
		}
	}
}

// Concurrent publishes share fsyncs: Pebble's commit pipeline syncs once
// for every batch queued while the previous sync ran.
func syncCount(b *Bus) uint64 {
	n, _ := b.WALSyncs()
	return n
}

func TestGroupCommitSharesFsyncs(t *testing.T) {
	b := openTest(t, Config{})
	defer closeBus(t, b)
	// One at a time, each publish waits for its own fsync: the count
	// measures syncs.
	before := syncCount(b)
	publishN(t, b, "events", 0, 20)
	// Pebble records a sync's latency just after releasing its waiters.
	testenv.Eventually(t, 5*time.Second, "20 sequential publishes took fewer than 20 WAL fsyncs", func() bool {
		return syncCount(b)-before >= 20
	})

	settled := syncCount(b)
	testenv.Eventually(t, 5*time.Second, "the fsync count did not settle", func() bool {
		n := syncCount(b)
		defer func() { settled = n }()
		return n == settled
	})
	before = syncCount(b)
	const n = 400
	errs := make(chan error, n)
	start := make(chan struct{})
	for i := range n {
		go func() {
			<-start
			errs <- b.Publish(context.Background(), "events", bus.Message{Key: strconv.Itoa(i % 7), Payload: []byte("x")})
		}()
	}
	close(start)
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	syncs := syncCount(b) - before
	if syncs == 0 || syncs >= n {
		t.Fatalf("%d concurrent publishes took %d WAL fsyncs, want between 1 and %d", n, syncs, n-1)
	}
	t.Logf("%d publishes, %d fsyncs", n, syncs)
}

// crashableStore is an in-memory file system whose CrashClone keeps only
// what was fsynced, as a machine crash would.
func crashableStore() *vfs.MemFS {
	return withDiskUsage(vfs.NewCrashableMem())
}

// crash is what a machine crash leaves of fs: what was fsynced.
func crash(fs *vfs.MemFS) *vfs.MemFS { return withDiskUsage(fs.CrashClone(vfs.CrashCloneCfg{})) }

// withDiskUsage gives fs a disk size (a MemFS has none, and the bus checks
// its free space).
func withDiskUsage(fs *vfs.MemFS) *vfs.MemFS {
	fs.TestingSetDiskUsage(vfs.DiskUsage{AvailBytes: 1 << 40, TotalBytes: 1 << 40})
	return fs
}

// abandon closes b without waiting for its unsettled deliveries.
func abandon(b *Bus) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = b.Close(ctx) // reports the unsettled deliveries
}

// A first delivery is not written (one write per event less), so after a
// crash recovery counts every message not yet counted as delivered once:
// a message that crashes the process on its first delivery still reaches
// MaxDeliveries. After a clean close, counts are exact: Close writes those
// of first deliveries handed out and not settled. Deferred acks ride on
// the next write, so an ack followed by a publish survives the crash.
func TestFirstDeliveriesCountedAcrossCrashAndCleanClose(t *testing.T) {
	opts := bus.SubscribeOptions{Topic: "events", Subscription: "s", MaxDeliveries: 2,
		Backoff: func(int) time.Duration { return 0 }}
	attempts := func(t *testing.T, b *Bus, n int) map[string]int {
		t.Helper()
		c := subscribeT(t, b, opts)
		got := map[string]int{}
		for range n {
			d := receiveT(t, c)
			got[d.Properties["i"]] = d.Attempt
			if err := d.Ack(); err != nil {
				t.Fatal(err)
			}
		}
		return got
	}

	t.Run("crash", func(t *testing.T) {
		fs := crashableStore()
		b := openTest(t, Config{Dir: "store", FS: fs})
		c := subscribeT(t, b, opts)
		publishN(t, b, "events", 1, 4)
		first := receiveT(t, c) // message 1: handed out, the crash comes before it is settled
		acked := receiveT(t, c) // message 2: acked, its delete deferred
		if err := acked.Ack(); err != nil {
			t.Fatal(err)
		}
		publishN(t, b, "events", 4, 5) // fsyncs, the deferred ack with it
		if first.Properties["i"] != "1" || acked.Properties["i"] != "2" {
			t.Fatalf("received messages %s and %s, want 1 and 2", first.Properties["i"], acked.Properties["i"])
		}
		crashed := crash(fs)
		abandon(b)

		b = openTest(t, Config{Dir: "store", FS: crashed})
		defer closeBus(t, b)
		if n := backlog(t, b, "events", "s"); n != 3 {
			t.Fatalf("backlog after the crash = %d, want 3 (messages 1, 3, 4; 2 was acked)", n)
		}
		// Message 1 was delivered once; 3 and 4 were not, but a crash cannot
		// tell them apart: all three count one delivery.
		got := attempts(t, b, 3)
		want := map[string]int{"1": 2, "3": 2, "4": 2}
		if !maps.Equal(got, want) {
			t.Fatalf("attempts after the crash = %v, want %v", got, want)
		}
	})

	t.Run("clean close", func(t *testing.T) {
		fs := crashableStore()
		b := openTest(t, Config{Dir: "store", FS: fs})
		c := subscribeT(t, b, opts)
		publishN(t, b, "events", 1, 3)
		receiveT(t, c) // message 1, never settled
		abandon(b)
		// What Close wrote is fsynced: a crash right after it keeps it.
		crashed := crash(fs)

		b = openTest(t, Config{Dir: "store", FS: crashed})
		got := attempts(t, b, 2)
		if want := map[string]int{"1": 2, "2": 1}; !maps.Equal(got, want) {
			t.Fatalf("attempts after a clean close = %v, want %v", got, want)
		}
		closeBus(t, b)
		// The marker is gone once read: a crash of this second life counts
		// again.
		b = openTest(t, Config{Dir: "store", FS: crashed})
		defer closeBus(t, b)
		publishN(t, b, "events", 3, 4)
		crashedAgain := crash(crashed)
		closeBus(t, b)
		b = openTest(t, Config{Dir: "store", FS: crashedAgain})
		defer closeBus(t, b)
		if got := attempts(t, b, 1); got["3"] != 2 {
			t.Fatalf("attempts after a crash following a clean restart = %v, want message 3 at attempt 2", got)
		}
	})
}
