package embedded

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/larkway/larkway/core/internal/bus"
)

// Records held in memory beside the store stay under recordBytes, a
// hand-out of a message held or not gives the same message, and the last
// subscription's ack (or a spill) gives the memory back.
func TestHeldRecordsAreBoundedAndReleased(t *testing.T) {
	b := openTest(t, Config{})
	defer closeBus(t, b)
	subs := []bus.Consumer{
		subscribeT(t, b, bus.SubscribeOptions{Topic: "events", Subscription: "a"}),
		subscribeT(t, b, bus.SubscribeOptions{Topic: "events", Subscription: "b"}),
	}
	// 1 MiB each: past recordBytes after eight, so the later ones are read
	// back from the store.
	const n = 12
	payload := func(i int) []byte { return append(fmt.Appendf(nil, "%02d:", i), bytes.Repeat([]byte{'x'}, 1<<20)...) }
	for i := range n {
		if err := b.Publish(t.Context(), "events", bus.Message{Key: "k", Payload: payload(i)}); err != nil {
			t.Fatalf("Publish %d: %v", i, err)
		}
		if h := b.heldBytes.Load(); h > recordBytes {
			t.Fatalf("after %d publishes %d bytes held, over the %d bound", i+1, h, recordBytes)
		}
	}
	if h := b.heldBytes.Load(); h < recordBytes-(2<<20) {
		t.Fatalf("%d bytes held after %d MiB published: the bound is %d", h, n, recordBytes)
	}
	for si, c := range subs {
		for i := range n {
			d := receiveT(t, c)
			if !bytes.Equal(d.Message.Payload, payload(i)) {
				t.Fatalf("subscription %d, message %d: got %.8q…", si, i, d.Message.Payload)
			}
			if err := d.Ack(); err != nil {
				t.Fatal(err)
			}
		}
		if h := b.heldBytes.Load(); si == 0 && h == 0 {
			t.Fatal("records released while subscription b still holds them")
		}
	}
	if h := b.heldBytes.Load(); h != 0 {
		t.Fatalf("%d bytes still held after every subscription acknowledged", h)
	}
}

// A message spilled to disk by every subscription is not held in memory
// while it waits there; read back, it is held until acknowledged.
func TestSpilledRecordsAreNotHeld(t *testing.T) {
	b := openTest(t, Config{MemoryWindow: 2})
	defer closeBus(t, b)
	c := subscribeT(t, b, bus.SubscribeOptions{Topic: "events", Subscription: "s"})
	publishN(t, b, "events", 0, 2)
	kept := b.heldBytes.Load()
	if kept == 0 {
		t.Fatal("the messages in the memory window are not held")
	}
	publishN(t, b, "events", 2, 10)
	if h := b.heldBytes.Load(); h != kept {
		t.Fatalf("%d bytes held after the window spilled, want the window's %d", h, kept)
	}
	ackInOrder(t, c, 10)
	if h := b.heldBytes.Load(); h != 0 {
		t.Fatalf("%d bytes still held after the backlog drained", h)
	}
}

// Messages recovered at Open are held as they were read, and handed out
// from memory.
func TestRecoveredRecordsAreHeld(t *testing.T) {
	dir := t.TempDir()
	b := openTest(t, Config{Dir: dir})
	subscribeT(t, b, bus.SubscribeOptions{Topic: "events", Subscription: "s"})
	publishN(t, b, "events", 0, 5)
	closeBus(t, b)

	b = openTest(t, Config{Dir: dir})
	defer closeBus(t, b)
	if b.heldBytes.Load() == 0 {
		t.Fatal("the recovered messages are not held")
	}
	c := subscribeT(t, b, bus.SubscribeOptions{Topic: "events", Subscription: "s"})
	ackInOrder(t, c, 5)
	if h := b.heldBytes.Load(); h != 0 {
		t.Fatalf("%d bytes still held after the recovered messages were acknowledged", h)
	}
}

// ackInOrder receives and acks publishN's messages 0 to n-1 from c, in order.
func ackInOrder(t *testing.T, c bus.Consumer, n int) {
	t.Helper()
	for i := range n {
		d := receiveT(t, c)
		if got, want := string(d.Message.Payload), fmt.Sprintf("m%d", i); got != want {
			t.Fatalf("message %d: got %q, want %q", i, got, want)
		}
		if err := d.Ack(); err != nil {
			t.Fatal(err)
		}
	}
}
