package embedded

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/larkway/larkway/core/internal/bus"
)

// The crash tests run a helper process (this test binary again, in
// TestHelperProcess) that writes to a store under load, kill it with SIGKILL,
// and reopen the store here.

const (
	helperEnv  = "LARKWAY_EMBEDDED_BUS_HELPER"
	helperDir  = "LARKWAY_EMBEDDED_BUS_DIR"
	crashTopic = "events"
	crashSub   = "plugin"
)

// crashWindow is the crash tests' Config.MemoryWindow.
const crashWindow = 64

// crashBackoff is short so that the parent receives the messages the
// helper nacked without a long wait.
func crashOpts() bus.SubscribeOptions {
	return bus.SubscribeOptions{Topic: crashTopic, Subscription: crashSub,
		Backoff: func(int) time.Duration { return 10 * time.Millisecond }}
}

// TestHelperProcess is the process the crash tests kill. It publishes from
// eight goroutines and prints "ok <id>" after each Publish that returned
// nil; a consumer acks a third of what it receives (printing "acking <id>"
// before it calls Ack), nacks a third and leaves a third unsettled, so
// every kind of write is in flight when the kill comes. It runs until
// killed.
func TestHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		t.Skip("the crash tests' helper process; runs only when they start it")
	}
	// A small memory window: the kills also land while the backlog spills
	// to disk and is read back (spill.go).
	b, err := Open(Config{Dir: os.Getenv(helperDir), MemoryWindow: crashWindow}, nil)
	if err != nil {
		fmt.Fprintf(os.Stderr, "Open: %v\n", err)
		os.Exit(2)
	}
	ctx := context.Background()
	c, err := b.Subscribe(ctx, crashOpts())
	if err != nil {
		fmt.Fprintf(os.Stderr, "Subscribe: %v\n", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(os.Stdout, format+"\n", args...) // unbuffered: one write per line
	}
	round := os.Getenv(helperEnv)
	for w := range 8 {
		go func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("%s-%d-%d", round, w, i)
				m := bus.Message{Key: "chat-" + strconv.Itoa(i%20), Payload: []byte(id)}
				if err := b.Publish(ctx, crashTopic, m); err != nil {
					fmt.Fprintf(os.Stderr, "Publish: %v\n", err)
					os.Exit(2)
				}
				say("ok %s", id)
			}
		}()
	}
	for n := 0; ; n++ {
		d, err := c.Receive(ctx)
		if err != nil {
			fmt.Fprintf(os.Stderr, "Receive: %v\n", err)
			os.Exit(2)
		}
		switch n % 3 {
		case 0:
			// Said before the Ack: the kill can come between the ack's
			// write and a line after it.
			say("acking %s", d.Payload)
			if err := d.Ack(); err != nil {
				fmt.Fprintf(os.Stderr, "Ack: %v\n", err)
				os.Exit(2)
			}
		case 1:
			_ = d.Nack()
		}
	}
}

// runHelper starts the helper on dir, SIGKILLs it once it has confirmed
// killAfter publishes, and returns every publish it confirmed and every
// ack it began.
func runHelper(t *testing.T, dir, round string, killAfter int) (oks, acks map[string]bool) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+round, helperDir+"="+dir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	oks, acks = map[string]bool{}, map[string]bool{}
	sc := bufio.NewScanner(out)
	killed := false
	for sc.Scan() { // ends at EOF: the helper is dead
		kind, id, _ := strings.Cut(sc.Text(), " ")
		switch kind {
		case "ok":
			oks[id] = true
		case "acking":
			acks[id] = true
		}
		if !killed && len(oks) >= killAfter {
			if err := cmd.Process.Kill(); err != nil { // SIGKILL
				t.Fatal(err)
			}
			killed = true
		}
	}
	_, _ = io.Copy(io.Discard, out)
	err = cmd.Wait()
	if !killed {
		t.Fatalf("helper exited before it was killed (%v): %s", err, stderr.String())
	}
	if stderr.Len() > 0 && !strings.Contains(stderr.String(), "signal: killed") {
		t.Logf("helper stderr: %s", stderr.String())
	}
	return oks, acks
}

// Kill -9 under load, three times, on the same directory: every publish
// that returned nil is delivered after the restart unless the helper had
// begun to ack it (the bus is at-least-once: an ack not yet on disk when
// the kill came is delivered again, which the dispatcher's dedup absorbs;
// the test asserts at-least-once and counts those). What the parent acks
// and closes cleanly is never delivered again.
func TestCrashUnderLoadLosesNoAcknowledgedPublish(t *testing.T) {
	dir := t.TempDir()
	seen := map[string]int{} // by the parent, across rounds
	for round := range 3 {
		name := "r" + strconv.Itoa(round)
		oks, acks := runHelper(t, dir, name, 100+rand.IntN(900))

		b := openTest(t, Config{Dir: dir, MemoryWindow: crashWindow})
		c := subscribeT(t, b, crashOpts())
		n := backlog(t, b, crashTopic, crashSub)
		got := map[string]bool{}
		for range n {
			d := receiveT(t, c)
			got[string(d.Payload)] = true
			seen[string(d.Payload)]++
			if err := d.Ack(); err != nil {
				t.Fatal(err)
			}
		}
		if left := backlog(t, b, crashTopic, crashSub); left != 0 {
			t.Errorf("round %d: backlog %d after receiving all %d", round, left, n)
		}
		closeBus(t, b)

		lost, redelivered := 0, 0
		for id := range oks {
			switch {
			case got[id] && acks[id]:
				redelivered++
			case !got[id] && !acks[id]:
				lost++
				if lost <= 5 {
					t.Errorf("round %d: %s was acknowledged to its publisher, never delivered", round, id)
				}
			}
		}
		if lost > 0 {
			t.Fatalf("round %d: %d acknowledged publishes lost", round, lost)
		}
		unconfirmed := 0
		for id := range got {
			if !strings.HasPrefix(id, name+"-") {
				t.Errorf("round %d: delivered %s, from an earlier round the parent had acked", round, id)
			}
			if !oks[id] {
				unconfirmed++ // stored; the kill came before the helper printed ok
			}
		}
		t.Logf("round %d: %d publishes confirmed, %d acks begun; after restart %d delivered (%d of the acked again, %d whose ok the kill cut off)",
			round, len(oks), len(acks), len(got), redelivered, unconfirmed)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("%s delivered %d times after clean closes", id, n)
		}
	}
}

// crashImage copies dir, as it is on disk now, to a new directory: what a
// machine crash would leave of an open store (plus any writes not yet
// synced, which a crash may also have left).
func crashImage(t *testing.T, dir string) string {
	t.Helper()
	img := t.TempDir()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(img, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

// newest returns the path of the highest-numbered file in dir ending in ext.
func newest(t *testing.T, dir, ext string) string {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(dir, "*"+ext))
	if err != nil || len(matches) == 0 {
		t.Fatalf("no %s file in %s (%v)", ext, dir, err)
	}
	slices.Sort(matches)
	return matches[len(matches)-1]
}

// storeWithWAL publishes messages 1..n, one at a time, and returns a crash
// image of the open store with them in its WAL.
func storeWithWAL(t *testing.T, n, size int) string {
	t.Helper()
	dir := t.TempDir()
	b := openTest(t, Config{Dir: dir})
	subscribeT(t, b, crashOpts())
	for i := 1; i <= n; i++ {
		p := "m" + strconv.Itoa(i)
		p += strings.Repeat(".", max(size-len(p), 0))
		if err := b.Publish(t.Context(), crashTopic, bus.Message{Key: "k", Payload: []byte(p)}); err != nil {
			t.Fatal(err)
		}
	}
	img := crashImage(t, dir)
	closeBus(t, b)
	return img
}

func payloads(t *testing.T, b *Bus) []string {
	t.Helper()
	c := subscribeT(t, b, crashOpts())
	n := backlog(t, b, crashTopic, crashSub)
	var got []string
	for range n {
		d := receiveT(t, c)
		got = append(got, string(d.Payload))
		if err := d.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	return got
}

// A write torn by the crash (the WAL's last record cut short) is dropped at
// recovery, everything before it kept, and the store goes on.
func TestTornLastWriteIsTruncated(t *testing.T) {
	img := storeWithWAL(t, 20, 0)
	wal := newest(t, img, ".log")
	fi, err := os.Stat(wal)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(wal, fi.Size()-3); err != nil {
		t.Fatal(err)
	}

	b := openTest(t, Config{Dir: img})
	got := payloads(t, b)
	var want []string
	for i := 1; i < 20; i++ {
		want = append(want, "m"+strconv.Itoa(i))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("after a torn last write recovered %v, want %v", got, want)
	}
	publishN(t, b, crashTopic, 21, 22)
	closeBus(t, b)
	// The torn record is gone for good: a second recovery agrees.
	b = openTest(t, Config{Dir: img})
	defer closeBus(t, b)
	if got := payloads(t, b); !slices.Equal(got, []string{"m21"}) {
		t.Fatalf("second recovery delivered %v, want [m21]", got)
	}
}

// flip inverts the byte at off in path.
func flip(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// Corruption anywhere but a torn tail stops Open with an error naming the
// file and the position, instead of skipping what follows it.
func TestCorruptionIsReportedWithItsPosition(t *testing.T) {
	t.Run("wal", func(t *testing.T) {
		img := storeWithWAL(t, 20, 4096)
		wal := newest(t, img, ".log")
		fi, err := os.Stat(wal)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("wal %d bytes", fi.Size())
		flip(t, wal, 10_000)
		_, err = Open(Config{Dir: img}, testLogger(t))
		if !pebble.IsCorruptionError(err) {
			t.Fatalf("Open on a corrupt WAL = %v, want pebble.ErrCorruption", err)
		}
		for _, want := range []string{"wal " + strings.TrimLeft(strings.TrimSuffix(filepath.Base(wal), ".log"), "0"), "offset"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not name %q", err, want)
			}
		}
	})
	t.Run("sstable", func(t *testing.T) {
		dir := t.TempDir()
		b := openTest(t, Config{Dir: dir})
		subscribeT(t, b, crashOpts())
		publishN(t, b, crashTopic, 1, 200)
		closeBus(t, b)
		closeBus(t, openTest(t, Config{Dir: dir})) // recovery flushes the WAL to an sstable
		sst := newest(t, dir, ".sst")
		fi, err := os.Stat(sst)
		if err != nil {
			t.Fatal(err)
		}
		flip(t, sst, fi.Size()/4)
		_, err = Open(Config{Dir: dir}, testLogger(t))
		if err == nil {
			t.Fatal("Open on a corrupt sstable succeeded")
		}
		if !pebble.IsCorruptionError(err) {
			t.Errorf("Open on a corrupt sstable = %v, want pebble.ErrCorruption", err)
		}
		num := strings.TrimLeft(strings.TrimSuffix(filepath.Base(sst), ".sst"), "0")
		if !strings.Contains(err.Error(), num) {
			t.Errorf("error %q does not name sstable %s", err, num)
		}
		t.Logf("reported: %v", err)
	})
}
