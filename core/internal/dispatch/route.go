package dispatch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/dlq"
	"github.com/larkway/larkway/core/internal/envelope"
)

// Route consumes one plugin's subscription on every topic and hands each
// delivery to the plugin's current Session. Instances come and go (crash,
// restart, hot swap) while the Route, its bus consumers and its per-chat
// order stay: a delivery that finds no instance waits for one.
//
// MaxInFlight workers take deliveries from a keyedQueue: a chat's events are
// handled one at a time, in order, while different chats proceed in
// parallel on whichever workers are free.
type Route struct {
	d    *Dispatcher
	name string

	mu      sync.Mutex
	cur     *Session
	changed chan struct{} // closed (and replaced) whenever cur changes
}

// Route returns a new route for the plugin named name.
func (d *Dispatcher) Route(name string) *Route {
	// Start every series at zero, so dashboards and alerts see the plugin
	// (and rates work) before anything happens.
	d.metrics.forPlugin(name)
	d.metrics.dead.WithLabelValues(name)
	return &Route{d: d, name: name, changed: make(chan struct{})}
}

// Name is the plugin's name.
func (r *Route) Name() string { return r.name }

// Current is the session receiving new deliveries, or nil.
func (r *Route) Current() *Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur
}

func (r *Route) setCurrent(s *Session) *Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	prev := r.cur
	r.cur = s
	close(r.changed)
	r.changed = make(chan struct{})
	return prev
}

// Attach opens p's Handle stream and makes it the current session: new
// deliveries go to it from now on. The previous session, if any, is
// detached and returned; the caller drains and stops it.
func (r *Route) Attach(ctx context.Context, p Plugin) (*Session, *Session, error) {
	if got := p.Manifest().GetName(); got != r.name {
		return nil, nil, fmt.Errorf("attaching to route %s: plugin describes itself as %q", r.name, got)
	}
	s, err := r.d.openSession(ctx, p)
	if err != nil {
		return nil, nil, err
	}
	prev := r.setCurrent(s)
	if prev != nil {
		prev.detach()
	}
	return s, prev, nil
}

// Detach stops new deliveries to s (if it is current, none is current
// until the next Attach). In-flight deliveries finish; see Session.Drain.
func (r *Route) Detach(s *Session) {
	r.mu.Lock()
	isCur := r.cur == s
	r.mu.Unlock()
	if isCur {
		r.setCurrent(nil)
	}
	s.detach()
}

// acquire waits for a current session that accepts a delivery.
func (r *Route) acquire(ctx context.Context) (*Session, error) {
	for {
		r.mu.Lock()
		s, changed := r.cur, r.changed
		r.mu.Unlock()
		if s != nil && s.acquire() {
			return s, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Run consumes the plugin's subscription on every topic until ctx ends,
// then stops reading, finishes the deliveries it holds, closes its consumers
// and returns. subscribed, if not nil, is called once every subscription
// exists (before that, an event could reach no subscriber).
func (r *Route) Run(ctx context.Context, subscribed func()) error {
	d := r.d
	n := d.cfg.MaxInFlight
	// Up to 4 deliveries a worker wait, so a worker that finishes finds
	// another chat's delivery ready; the bus holds the rest.
	work := newKeyedQueue(4 * n)
	var workers sync.WaitGroup
	for range n {
		workers.Add(1)
		go func() { defer workers.Done(); r.worker(ctx, work) }()
	}
	var consumers []bus.Consumer
	var readers sync.WaitGroup
	stop := func() {
		readers.Wait()
		work.close()
		workers.Wait()
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, c := range consumers {
			if err := c.Close(cctx); err != nil {
				d.logger.Warn("closing consumer", "plugin", r.name, "err", err)
			}
		}
	}
	for _, topic := range d.cfg.Topics {
		c, err := d.bus.Subscribe(ctx, bus.SubscribeOptions{
			Topic: topic, Subscription: Subscription(r.name), DeadLetterTopic: DeadLetterTopic(topic, r.name),
			// The dispatcher dead-letters with a reason itself at MaxAttempts;
			// the bus's own dead-lettering one later is a backstop.
			MaxDeliveries: d.cfg.MaxAttempts + 1, Backoff: d.cfg.Backoff,
		})
		if err != nil {
			stop()
			return fmt.Errorf("subscribing %s to %s: %w", r.name, topic, err)
		}
		consumers = append(consumers, c)
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				del, err := c.Receive(ctx)
				if err != nil {
					return
				}
				work.put(del)
			}
		}()
	}
	if d.cfg.DeadLetters != nil {
		for _, topic := range d.cfg.Topics {
			c, err := d.bus.Subscribe(ctx, bus.SubscribeOptions{Topic: DeadLetterTopic(topic, r.name),
				Subscription: DeadLetterIndexSubscription, MaxDeliveries: 0})
			if err != nil {
				stop()
				return fmt.Errorf("subscribing to %s's dead letters on %s: %w", r.name, topic, err)
			}
			consumers = append(consumers, c)
			readers.Add(1)
			go func() { defer readers.Done(); r.indexDeadLetters(ctx, c, topic) }()
		}
	}
	if subscribed != nil {
		subscribed()
	}
	<-ctx.Done()
	stop()
	return nil
}

// indexDeadLetters copies the plugin's dead letters into the admin index.
func (r *Route) indexDeadLetters(ctx context.Context, c bus.Consumer, topic string) {
	for {
		del, err := c.Receive(ctx)
		if err != nil {
			return
		}
		props := make(map[string]string, len(del.Properties))
		for k, v := range del.Properties {
			props[k] = v
		}
		e := dlq.Entry{ID: del.ID, Plugin: r.name, Topic: topic, Key: del.Key, Reason: props[PropDeadLetterReason],
			EventID: props[envelope.PropEventID], EventType: props[envelope.PropEventType], Payload: del.Payload,
			Properties: props, DeadAt: del.PublishTime}
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		err = r.d.cfg.DeadLetters.Add(actx, e)
		cancel()
		if err != nil {
			r.d.logger.Warn("indexing dead letter failed; will retry", "plugin", r.name, "err", err)
			_ = del.Nack()
			continue
		}
		_ = del.Ack()
	}
}

// Replay publishes a dead letter back to its topic for this plugin alone
// and removes it from the index.
func (d *Dispatcher) Replay(ctx context.Context, e dlq.Entry) error {
	props := make(map[string]string, len(e.Properties)+1)
	for k, v := range e.Properties {
		if k != PropDeadLetterReason {
			props[k] = v
		}
	}
	props[PropOnlyPlugin] = e.Plugin
	if err := d.bus.Publish(ctx, e.Topic, bus.Message{Key: e.Key, Payload: e.Payload, Properties: props}); err != nil {
		return fmt.Errorf("replaying %s/%s: %w", e.Plugin, e.ID, err)
	}
	if d.cfg.DeadLetters != nil {
		if err := d.cfg.DeadLetters.Delete(ctx, e.Plugin, e.ID); err != nil && !errors.Is(err, dlq.ErrNotFound) {
			return fmt.Errorf("replayed %s/%s but could not remove it from the index: %w", e.Plugin, e.ID, err)
		}
	}
	return nil
}

// worker handles deliveries one at a time, a chat's in order (see
// keyedQueue). On shutdown it finishes what is queued if an instance is
// serving (routes stop before instances do); with none (crashed,
// quarantined, disabled) it nacks them for redelivery at once.
func (r *Route) worker(ctx context.Context, work *keyedQueue) {
	for {
		del, ok := work.take()
		if !ok {
			return
		}
		var s *Session
		if ctx.Err() != nil {
			if cur := r.Current(); cur != nil && cur.acquire() {
				s = cur
			}
		} else if cur, err := r.acquire(ctx); err == nil {
			s = cur
		}
		if s == nil {
			_ = del.Nack()
			work.done(del)
			continue
		}
		s.process(ctx, del)
		s.release()
		work.done(del)
	}
}
