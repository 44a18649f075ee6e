// Package bustest is the conformance suite every bus.Bus implementation passes.
//
// Each subtest creates its own bus with newBus, uses topics unique to the run
// (testenv.Name) and runs in parallel with the others. Nothing waits by
// sleeping: a test receives with a deadline, and proves that a message was
// not redelivered by receiving a later marker message in its place.
package bustest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/testenv"
)

// ReceiveTimeout bounds every wait for a message that must arrive. It is
// generous: the Pulsar run shares two cores with the broker's JVM.
const ReceiveTimeout = 30 * time.Second

// closeTimeout bounds the Close calls the suite makes. A passing test leaves
// nothing unsettled, so cleanup's Close returns at once; a failed one may not,
// and then waits this long.
const closeTimeout = 5 * time.Second

// Run runs the suite. newBus returns a new open bus; Run closes every bus it
// gets when the subtest that asked for it ends.
func Run(t *testing.T, newBus func(t *testing.T) bus.Bus) {
	tests := []struct {
		name string
		run  func(t *testing.T, b bus.Bus)
	}{
		{"Ping", testPing},
		{"PublishThenReceive", testPublishThenReceive},
		{"NewSubscriptionStartsAtLatest", testNewSubscriptionStartsAtLatest},
		{"SubscriptionKeepsBacklogWithoutConsumers", testSubscriptionKeepsBacklog},
		{"KeyOrder", testKeyOrder},
		{"AckPreventsRedelivery", testAckPreventsRedelivery},
		{"NackRedeliversAfterBackoff", testNackRedeliversAfterBackoff},
		{"NackRedeliversOnlyThatMessage", testNackRedeliversOnlyThatMessage},
		{"IndependentSubscriptions", testIndependentSubscriptions},
		{"KeySharedSplitsKeys", testKeySharedSplitsKeys},
		{"KeysMoveWhenConsumerCloses", testKeysMoveWhenConsumerCloses},
		{"DeadLetter", testDeadLetter},
		{"CloseDrainsInFlight", testCloseDrainsInFlight},
		{"CloseTimeoutReturnsMessages", testCloseTimeoutReturnsMessages},
		{"ReceiveHonorsContext", testReceiveHonorsContext},
		{"SubscribeValidates", testSubscribeValidates},
		{"BusClose", testBusClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newBus(t)
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
				defer cancel()
				if err := b.Close(ctx); err != nil {
					t.Errorf("closing bus: %v", err)
				}
			})
			tc.run(t, b)
		})
	}
}

func testPing(t *testing.T, b bus.Bus) {
	ctx, cancel := context.WithTimeout(t.Context(), ReceiveTimeout)
	defer cancel()
	if err := b.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

// A subscriber that exists before Publish returns receives the message, with
// everything the publisher set.
func testPublishThenReceive(t *testing.T, b bus.Bus) {
	topic := testenv.Name(t, "topic")
	c := subscribe(t, b, bus.SubscribeOptions{Topic: topic, Subscription: "sub"})
	before := time.Now()
	want := bus.Message{Key: "chat-1", Payload: []byte("hello"), Properties: map[string]string{"event_type": "im.message.receive_v1", "tenant": "t1"}}
	publish(t, b, topic, want)
	after := time.Now()

	d := receive(t, c)
	if d.Key != want.Key || string(d.Payload) != string(want.Payload) || !maps.Equal(d.Properties, want.Properties) {
		t.Errorf("received %+v, want %+v", d.Message, want)
	}
	if d.Topic != topic {
		t.Errorf("Topic = %q, want %q", d.Topic, topic)
	}
	if d.Attempt != 1 {
		t.Errorf("Attempt = %d, want 1", d.Attempt)
	}
	if d.ID == "" {
		t.Error("ID is empty")
	}
	// The broker's clock stamps Pulsar messages; allow for skew and rounding.
	if d.PublishTime.Before(before.Add(-time.Second)) || d.PublishTime.After(after.Add(time.Second)) {
		t.Errorf("PublishTime = %v, want within [%v, %v]", d.PublishTime, before, after)
	}
	mustAck(t, d)
}

// A new subscription starts at the latest position; an existing one keeps
// what it has not received.
func testNewSubscriptionStartsAtLatest(t *testing.T, b bus.Bus) {
	topic := testenv.Name(t, "topic")
	early := subscribe(t, b, bus.SubscribeOptions{Topic: topic, Subscription: "early"})
	publish(t, b, topic, msg("k", 1))
	late := subscribe(t, b, bus.SubscribeOptions{Topic: topic, Subscription: "late"})
	publish(t, b, topic, msg("k", 2))

	if got := seqOf(t, mustAckReceived(t, late)); got != 2 {
		t.Errorf("new subscription received seq %d first, want 2 (published after it was created)", got)
	}
	for want := 1; want <= 2; want++ {
		if got := seqOf(t, mustAckReceived(t, early)); got != want {
			t.Errorf("existing subscription received seq %d, want %d", got, want)
		}
	}
}

// A subscription is durable: messages published while it has no consumer wait
// for the next one.
func testSubscriptionKeepsBacklog(t *testing.T, b bus.Bus) {
	topic := testenv.Name(t, "topic")
	opts := bus.SubscribeOptions{Topic: topic, Subscription: "sub"}
	closeConsumer(t, subscribe(t, b, opts))
	publish(t, b, topic, msg("k", 1))
	c := subscribe(t, b, opts)
	if got := seqOf(t, mustAckReceived(t, c)); got != 1 {
		t.Errorf("received seq %d, want 1", got)
	}
}

// Messages of one key arrive in publish order, even when keys are published
// concurrently (so that the implementation batches them).
func testKeyOrder(t *testing.T, b bus.Bus) {
	const keys, perKey = 5, 40
	topic := testenv.Name(t, "topic")
	c := subscribe(t, b, bus.SubscribeOptions{Topic: topic, Subscription: "sub"})
	publishKeys(t, b, topic, keys, perKey)

	next := make(map[string]int)
	for range keys * perKey {
		d := receive(t, c)
		seq := seqOf(t, d)
		if seq != next[d.Key] {
			t.Fatalf("key %s: received seq %d, want %d", d.Key, seq, next[d.Key])
		}
		next[d.Key]++
		mustAck(t, d)
	}
	for k := range keys {
		if key := keyName(k); next[key] != perKey {
			t.Errorf("key %s: received %d messages, want %d", key, next[key], perKey)
		}
	}
}

// An acked message is not delivered again, neither to the consumer nor to a
// later consumer of the subscription.
func testAckPreventsRedelivery(t *testing.T, b bus.Bus) {
	topic := testenv.Name(t, "topic")
	opts := bus.SubscribeOptions{Topic: topic, Subscription: "sub", Backoff: constBackoff(50 * time.Millisecond)}
	c := subscribe(t, b, opts)
	publish(t, b, topic, msg("a", 1))
	publish(t, b, topic, msg("b", 2))

	for range 2 {
		d := receive(t, c)
		if d.Key == "a" {
			mustAck(t, d)
		} else if err := d.Nack(); err != nil {
			t.Fatalf("Nack: %v", err)
		}
	}
	// The nacked message comes back; the acked one must not come with it.
	d := receive(t, c)
	if d.Key != "b" || d.Attempt != 2 {
		t.Fatalf("received key %q attempt %d, want the nacked message b at attempt 2", d.Key, d.Attempt)
	}
	mustAck(t, d)
	closeConsumer(t, c)

	c = subscribe(t, b, opts)
	publish(t, b, topic, msg("marker", 3))
	if got := seqOf(t, mustAckReceived(t, c)); got != 3 {
		t.Errorf("new consumer received seq %d, want only the marker (3): acked messages were redelivered", got)
	}
}

// A nacked message comes back after the subscription's backoff for that
// attempt, with the same ID and Attempt incremented.
func testNackRedeliversAfterBackoff(t *testing.T, b bus.Bus) {
	backoff := func(attempt int) time.Duration { return time.Duration(attempt) * 100 * time.Millisecond }
	// The Pulsar client rounds redelivery times to the millisecond.
	const slack = 5 * time.Millisecond
	topic := testenv.Name(t, "topic")
	c := subscribe(t, b, bus.SubscribeOptions{Topic: topic, Subscription: "sub", Backoff: backoff})
	publish(t, b, topic, msg("k", 1))

	var id string
	var nackedAt time.Time
	for attempt := 1; attempt <= 3; attempt++ {
		d := receive(t, c)
		if d.Attempt != attempt {
			t.Fatalf("Attempt = %d, want %d", d.Attempt, attempt)
		}
		if attempt == 1 {
			id = d.ID
		} else {
			if d.ID != id {
				t.Errorf("redelivered ID = %q, want %q", d.ID, id)
			}
			if waited, min := time.Since(nackedAt), backoff(attempt-1)-slack; waited < min {
				t.Errorf("attempt %d came %v after the nack, want at least %v", attempt, waited, backoff(attempt-1))
			}
		}
		if attempt == 3 {
			mustAck(t, d)
			break
		}
		nackedAt = time.Now()
		if err := d.Nack(); err != nil {
			t.Fatalf("Nack: %v", err)
		}
		if err := d.Nack(); err != nil {
			t.Fatalf("second Nack (a no-op): %v", err)
		}
	}
	publish(t, b, topic, msg("k", 2))
	if got := seqOf(t, mustAckReceived(t, c)); got != 2 {
		t.Errorf("received seq %d after acking, want the next message (2)", got)
	}
}

// Nacking one message redelivers it alone, even when it was published
// together with others of its key (Pulsar batches those into one entry).
func testNackRedeliversOnlyThatMessage(t *testing.T, b bus.Bus) {
	const n = 4
	topic := testenv.Name(t, "topic")
	c := subscribe(t, b, bus.SubscribeOptions{Topic: topic, Subscription: "sub", Backoff: constBackoff(50 * time.Millisecond)})
	publishConcurrently(t, b, topic, func(i int) bus.Message { return msg("k", i) }, n)

	var nacked string
	for i := range n {
		d := receive(t, c)
		if i == 1 {
			nacked = string(d.Payload)
			if err := d.Nack(); err != nil {
				t.Fatalf("Nack: %v", err)
			}
			continue
		}
		mustAck(t, d)
	}
	d := receive(t, c)
	if string(d.Payload) != nacked || d.Attempt != 2 {
		t.Fatalf("received %q attempt %d, want only the nacked %q at attempt 2", d.Payload, d.Attempt, nacked)
	}
	mustAck(t, d)
	publish(t, b, topic, msg("k", n))
	if got := seqOf(t, mustAckReceived(t, c)); got != n {
		t.Errorf("received seq %d, want the marker %d: acked messages were redelivered", got, n)
	}
}

// Distinct subscriptions each see every message.
func testIndependentSubscriptions(t *testing.T, b bus.Bus) {
	const keys, perKey = 4, 5
	topic := testenv.Name(t, "topic")
	subs := []bus.Consumer{
		subscribe(t, b, bus.SubscribeOptions{Topic: topic, Subscription: "one"}),
		subscribe(t, b, bus.SubscribeOptions{Topic: topic, Subscription: "two"}),
	}
	publishKeys(t, b, topic, keys, perKey)
	for i, c := range subs {
		seen := make(map[string]bool)
		for range keys * perKey {
			seen[string(mustAckReceived(t, c).Payload)] = true
		}
		if len(seen) != keys*perKey {
			t.Errorf("subscription %d saw %d distinct messages, want %d", i, len(seen), keys*perKey)
		}
	}
}

// Consumers sharing a subscription split the keys: each key's messages reach
// one consumer, in order, and together they see everything.
func testKeySharedSplitsKeys(t *testing.T, b bus.Bus) {
	const consumers, keys, perKey = 3, 24, 5
	topic := testenv.Name(t, "topic")
	cs := make([]bus.Consumer, consumers)
	for i := range cs {
		cs[i] = subscribe(t, b, bus.SubscribeOptions{Topic: topic, Subscription: "shared"})
	}

	type record struct {
		consumer int
		key      string
		seq      int
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	got := make(chan record)
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Go(func() {
			for {
				d, err := c.Receive(ctx)
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("consumer %d: Receive: %v", i, err)
					}
					return
				}
				seq, err := parseSeq(d)
				if err != nil {
					t.Errorf("consumer %d: %v", i, err)
				}
				if err := d.Ack(); err != nil {
					t.Errorf("consumer %d: Ack: %v", i, err)
				}
				select {
				case got <- record{i, d.Key, seq}:
				case <-ctx.Done():
					return
				}
			}
		})
	}
	defer wg.Wait()
	defer cancel()

	publishKeys(t, b, topic, keys, perKey)

	owner := make(map[string]int)
	next := make(map[string]int)
	perConsumer := make([]int, consumers)
	deadline := time.After(ReceiveTimeout)
	for n := 0; n < keys*perKey; n++ {
		var r record
		select {
		case r = <-got:
		case <-deadline:
			t.Fatalf("received %d of %d messages within %v", n, keys*perKey, ReceiveTimeout)
		}
		if o, ok := owner[r.key]; ok && o != r.consumer {
			t.Errorf("key %s reached consumers %d and %d", r.key, o, r.consumer)
		}
		owner[r.key] = r.consumer
		if r.seq != next[r.key] {
			t.Errorf("key %s: consumer %d received seq %d, want %d", r.key, r.consumer, r.seq, next[r.key])
		}
		next[r.key] = r.seq + 1
		perConsumer[r.consumer]++
	}
	busy := 0
	for _, n := range perConsumer {
		if n > 0 {
			busy++
		}
	}
	if busy < 2 {
		t.Errorf("messages per consumer %v: want the keys split over at least two consumers", perConsumer)
	}
}

// When a consumer of a shared subscription closes, the keys it had move to
// the remaining consumer.
func testKeysMoveWhenConsumerCloses(t *testing.T, b bus.Bus) {
	const keys = 24
	topic := testenv.Name(t, "topic")
	leaving := subscribe(t, b, bus.SubscribeOptions{Topic: topic, Subscription: "shared"})
	staying := subscribe(t, b, bus.SubscribeOptions{Topic: topic, Subscription: "shared"})

	// Round one: both consumers take their share.
	ctx, cancel := context.WithTimeout(t.Context(), ReceiveTimeout)
	defer cancel()
	got := make(chan string, keys)
	var wg sync.WaitGroup
	for _, c := range []bus.Consumer{leaving, staying} {
		wg.Go(func() {
			for {
				d, err := c.Receive(ctx)
				if err != nil {
					return
				}
				if err := d.Ack(); err != nil {
					t.Errorf("Ack: %v", err)
				}
				got <- d.Key
			}
		})
	}
	publishKeys(t, b, topic, keys, 1)
	for n := range keys {
		select {
		case <-got:
		case <-ctx.Done():
			t.Fatalf("round one: received %d of %d messages", n, keys)
		}
	}
	cancel()
	wg.Wait()

	// Round two: with one consumer gone, the other gets every key.
	closeConsumer(t, leaving)
	for k := range keys {
		publish(t, b, topic, msg(keyName(k), 1))
	}
	seen := make(map[string]bool)
	for range keys {
		d := mustAckReceived(t, staying)
		if seq := seqOf(t, d); seq != 1 {
			t.Errorf("round two: received %s/%d, want seq 1", d.Key, seq)
		}
		seen[d.Key] = true
	}
	if len(seen) != keys {
		t.Errorf("round two: the remaining consumer saw %d distinct keys, want %d", len(seen), keys)
	}
}

// A message nacked after its last allowed delivery lands in the dead-letter
// topic with its key, payload and properties, and leaves the subscription.
func testDeadLetter(t *testing.T, b bus.Bus) {
	const maxDeliveries = 2
	topic := testenv.Name(t, "topic")
	opts := bus.SubscribeOptions{Topic: topic, Subscription: "sub", MaxDeliveries: maxDeliveries, Backoff: constBackoff(50 * time.Millisecond)}
	dlq := subscribe(t, b, bus.SubscribeOptions{Topic: opts.DeadLetter(), Subscription: "dlq-reader"})
	c := subscribe(t, b, opts)

	want := bus.Message{Key: "chat-9", Payload: []byte("poison"), Properties: map[string]string{"event_id": "ev-1"}}
	publish(t, b, topic, want)
	for attempt := 1; attempt <= maxDeliveries; attempt++ {
		d := receive(t, c)
		if d.Attempt != attempt || string(d.Payload) != "poison" {
			t.Fatalf("received %q attempt %d, want poison attempt %d", d.Payload, d.Attempt, attempt)
		}
		if err := d.Nack(); err != nil {
			t.Fatalf("Nack: %v", err)
		}
	}

	d := receive(t, dlq)
	if d.Key != want.Key || string(d.Payload) != string(want.Payload) {
		t.Errorf("dead letter = key %q payload %q, want key %q payload %q", d.Key, d.Payload, want.Key, want.Payload)
	}
	for k, v := range want.Properties {
		if d.Properties[k] != v {
			t.Errorf("dead letter property %s = %q, want %q (properties %v)", k, d.Properties[k], v, d.Properties)
		}
	}
	if d.Topic != opts.DeadLetter() {
		t.Errorf("dead letter Topic = %q, want %q", d.Topic, opts.DeadLetter())
	}
	mustAck(t, d)

	publish(t, b, topic, msg("marker", 1))
	if got := mustAckReceived(t, c); string(got.Payload) != string(msg("marker", 1).Payload) {
		t.Errorf("received %q after dead-lettering, want the marker", got.Payload)
	}
}

// Close stops handing out messages, then blocks until the message already
// handed out is acked; Receive after Close reports ErrClosed.
func testCloseDrainsInFlight(t *testing.T, b bus.Bus) {
	topic := testenv.Name(t, "topic")
	opts := bus.SubscribeOptions{Topic: topic, Subscription: "sub"}
	c := subscribe(t, b, opts)
	publish(t, b, topic, msg("k", 1))
	d := receive(t, c)

	ctx, cancel := context.WithTimeout(t.Context(), closeTimeout)
	defer cancel()
	closed := make(chan error, 1)
	go func() { closed <- c.Close(ctx) }()

	// Receive blocks until Close has begun, then reports ErrClosed.
	if _, err := receiveErr(t, c); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("Receive during Close = %v, want ErrClosed", err)
	}
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a delivery was outstanding", err)
	default:
	}
	mustAck(t, d)
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("Close did not return after the outstanding delivery was acked")
	}
	if _, err := receiveErr(t, c); !errors.Is(err, bus.ErrClosed) {
		t.Errorf("Receive after Close = %v, want ErrClosed", err)
	}
	if err := c.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}

	// The ack made during the drain stuck.
	c = subscribe(t, b, opts)
	publish(t, b, topic, msg("k", 2))
	if got := seqOf(t, mustAckReceived(t, c)); got != 2 {
		t.Errorf("received seq %d, want 2: the message acked during Close was redelivered", got)
	}
}

// When ctx ends before handed-out messages are settled, Close returns ctx's
// error and the messages go to the subscription's other consumers.
func testCloseTimeoutReturnsMessages(t *testing.T, b bus.Bus) {
	topic := testenv.Name(t, "topic")
	opts := bus.SubscribeOptions{Topic: topic, Subscription: "sub"}
	c := subscribe(t, b, opts)
	publish(t, b, topic, msg("k", 1))
	d := receive(t, c)

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if err := c.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close with an unsettled delivery = %v, want context.DeadlineExceeded", err)
	}

	c2 := subscribe(t, b, opts)
	again := receive(t, c2)
	if again.ID != d.ID || string(again.Payload) != string(d.Payload) {
		t.Errorf("received %s %q, want the unsettled message %s %q", again.ID, again.Payload, d.ID, d.Payload)
	}
	mustAck(t, again)
}

func testReceiveHonorsContext(t *testing.T, b bus.Bus) {
	c := subscribe(t, b, bus.SubscribeOptions{Topic: testenv.Name(t, "topic"), Subscription: "sub"})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := c.Receive(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Receive with a canceled ctx = %v, want context.Canceled", err)
	}
	ctx, cancel = context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Receive(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Receive on an empty topic = %v, want context.DeadlineExceeded", err)
	}
}

func testSubscribeValidates(t *testing.T, b bus.Bus) {
	topic := testenv.Name(t, "topic")
	for name, opts := range map[string]bus.SubscribeOptions{
		"no topic":               {Subscription: "sub"},
		"no subscription":        {Topic: topic},
		"negative MaxDeliveries": {Topic: topic, Subscription: "sub", MaxDeliveries: -1},
	} {
		if c, err := b.Subscribe(t.Context(), opts); err == nil {
			t.Errorf("%s: Subscribe succeeded", name)
			closeConsumer(t, c)
		}
	}
}

// After Close the bus refuses work; Close is idempotent.
func testBusClose(t *testing.T, b bus.Bus) {
	topic := testenv.Name(t, "topic")
	c := subscribe(t, b, bus.SubscribeOptions{Topic: topic, Subscription: "sub"})
	publish(t, b, topic, msg("k", 1))

	ctx, cancel := context.WithTimeout(t.Context(), closeTimeout)
	defer cancel()
	if err := b.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := b.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := b.Publish(ctx, topic, msg("k", 2)); !errors.Is(err, bus.ErrClosed) {
		t.Errorf("Publish after Close = %v, want ErrClosed", err)
	}
	if _, err := c.Receive(ctx); !errors.Is(err, bus.ErrClosed) {
		t.Errorf("Receive after Close = %v, want ErrClosed", err)
	}
	if _, err := b.Subscribe(ctx, bus.SubscribeOptions{Topic: topic, Subscription: "other"}); !errors.Is(err, bus.ErrClosed) {
		t.Errorf("Subscribe after Close = %v, want ErrClosed", err)
	}
	if err := b.Ping(ctx); err == nil {
		t.Error("Ping after Close succeeded")
	}
}

// Helpers.

func constBackoff(d time.Duration) func(int) time.Duration {
	return func(int) time.Duration { return d }
}

func keyName(k int) string { return "key-" + strconv.Itoa(k) }

// msg is message seq of key: the payload names both, the "seq" property
// carries seq.
func msg(key string, seq int) bus.Message {
	return bus.Message{
		Key:        key,
		Payload:    fmt.Appendf(nil, "%s/%d", key, seq),
		Properties: map[string]string{"seq": strconv.Itoa(seq)},
	}
}

func parseSeq(d *bus.Delivery) (int, error) {
	seq, err := strconv.Atoi(d.Properties["seq"])
	if err != nil || !strings.HasSuffix(string(d.Payload), "/"+d.Properties["seq"]) {
		return 0, fmt.Errorf("message %s (%q, properties %v) is not one of the suite's", d.ID, d.Payload, d.Properties)
	}
	return seq, nil
}

func seqOf(t *testing.T, d *bus.Delivery) int {
	t.Helper()
	seq, err := parseSeq(d)
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

func subscribe(t *testing.T, b bus.Bus, opts bus.SubscribeOptions) bus.Consumer {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), ReceiveTimeout)
	defer cancel()
	c, err := b.Subscribe(ctx, opts)
	if err != nil {
		t.Fatalf("subscribing %s to %s: %v", opts.Subscription, opts.Topic, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		if err := c.Close(ctx); err != nil {
			t.Errorf("closing consumer %s of %s: %v", opts.Subscription, opts.Topic, err)
		}
	})
	return c
}

func closeConsumer(t *testing.T, c bus.Consumer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), closeTimeout)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		t.Fatalf("closing consumer: %v", err)
	}
}

func publish(t *testing.T, b bus.Bus, topic string, m bus.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), ReceiveTimeout)
	defer cancel()
	if err := b.Publish(ctx, topic, m); err != nil {
		t.Fatalf("publishing to %s: %v", topic, err)
	}
}

// publishConcurrently publishes gen(0..n-1) from n goroutines at once.
func publishConcurrently(t *testing.T, b bus.Bus, topic string, gen func(int) bus.Message, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), ReceiveTimeout)
	defer cancel()
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs <- b.Publish(ctx, topic, gen(i)) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("publishing to %s: %v", topic, err)
		}
	}
}

// publishKeys publishes perKey messages to each of keys keys: the keys
// concurrently, each key's messages in order (seq 0..perKey-1).
func publishKeys(t *testing.T, b bus.Bus, topic string, keys, perKey int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*ReceiveTimeout)
	defer cancel()
	errs := make(chan error, keys)
	var wg sync.WaitGroup
	for k := range keys {
		wg.Go(func() {
			for i := range perKey {
				if err := b.Publish(ctx, topic, msg(keyName(k), i)); err != nil {
					errs <- fmt.Errorf("publishing %s/%d: %w", keyName(k), i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func receiveErr(t *testing.T, c bus.Consumer) (*bus.Delivery, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), ReceiveTimeout)
	defer cancel()
	return c.Receive(ctx)
}

func receive(t *testing.T, c bus.Consumer) *bus.Delivery {
	t.Helper()
	d, err := receiveErr(t, c)
	if err != nil {
		t.Fatalf("receiving: %v", err)
	}
	return d
}

func mustAck(t *testing.T, d *bus.Delivery) {
	t.Helper()
	if err := d.Ack(); err != nil {
		t.Fatalf("acking %s: %v", d.ID, err)
	}
	if err := d.Ack(); err != nil {
		t.Fatalf("second Ack of %s (a no-op): %v", d.ID, err)
	}
}

func mustAckReceived(t *testing.T, c bus.Consumer) *bus.Delivery {
	t.Helper()
	d := receive(t, c)
	mustAck(t, d)
	return d
}
