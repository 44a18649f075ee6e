package pulsar

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/testenv"
)

// History reads back what the topic still stores, from a publish time, in
// order, with keys and properties, stopping at the end of the range. The
// subscription keeps the messages (nothing acknowledges them), as
// retention would.
func TestHistory(t *testing.T) {
	b := newTestBus(t, Config{URL: testenv.PulsarURL(t)})
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	ctx := context.Background()
	topic := testenv.Name(t, "history")
	c, err := b.Subscribe(ctx, bus.SubscribeOptions{Topic: topic, Subscription: "keep"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			if err := b.Publish(ctx, topic, bus.Message{Key: fmt.Sprintf("oc_%d", i%3), Payload: []byte(fmt.Sprint(i)),
				Properties: map[string]string{"n": fmt.Sprint(i)}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(0, 5)
	mid := time.Now()
	publish(5, 20)
	end := time.Now().Add(time.Second)
	var got []string
	err = b.History(ctx, topic, mid, end, func(m bus.Message, published time.Time) error {
		var i int
		if _, err := fmt.Sscan(string(m.Payload), &i); err != nil || m.Properties["n"] != string(m.Payload) || m.Key != fmt.Sprintf("oc_%d", i%3) {
			t.Fatalf("message %+v", m)
		}
		got = append(got, string(m.Payload))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Publish times have millisecond precision: the first message after
	// mid may share its millisecond and fall before it.
	if len(got) < 14 || got[len(got)-1] != "19" {
		t.Fatalf("read %v", got)
	}
	// Everything read was published at or after mid, in order.
	for i := 1; i < len(got); i++ {
		var a, b int
		_, _ = fmt.Sscan(got[i-1], &a)
		_, _ = fmt.Sscan(got[i], &b)
		if b != a+1 || a < 4 {
			t.Fatalf("out of order: %v", got)
		}
	}
	// An empty range reads nothing, and returns: the end is the last
	// message stored, not a time.
	n := 0
	if err := b.History(ctx, topic, end, end.Add(time.Hour), func(bus.Message, time.Time) error { n++; return nil }); err != nil || n != 0 {
		t.Fatalf("future range: %d %v", n, err)
	}
	// So does a topic with nothing stored.
	if err := b.History(ctx, testenv.Name(t, "empty"), mid, end, func(bus.Message, time.Time) error { n++; return nil }); err != nil || n != 0 {
		t.Fatalf("empty topic: %d %v", n, err)
	}
	// Batched entries (several messages in one entry) end where they should.
	bb := newTestBus(t, Config{URL: testenv.PulsarURL(t), Batching: true, BatchingMaxPublishDelay: 50 * time.Millisecond})
	t.Cleanup(func() { _ = bb.Close(context.Background()) })
	btopic := testenv.Name(t, "batched")
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := bb.Publish(ctx, btopic, bus.Message{Key: "k", Payload: []byte(fmt.Sprint(i))}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	n = 0
	if err := bb.History(ctx, btopic, mid, time.Now().Add(time.Second), func(bus.Message, time.Time) error { n++; return nil }); err != nil || n != 10 {
		t.Fatalf("batched: %d %v", n, err)
	}
}
