package dispatch

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/dispatch/keyed"
	"github.com/larkway/larkway/core/internal/dlq"
)

// Route consumes one plugin's subscription on every topic and hands each
// delivery to the plugin's current Session. Instances come and go (crash,
// restart, hot swap) while the Route, its bus consumers and its per-chat
// order stay: a delivery that finds no instance waits for one.
//
// MaxInFlight workers take deliveries from a keyed.Queue: a chat's events
// are handled one at a time, in order, while different chats proceed in
// parallel on whichever workers are free.
type Route struct {
	d     *Dispatcher
	name  string
	m     *pluginMetrics
	holds *holds // retries waiting out a plugin's retry_after
	// refusals bounds the plugin's refused-action log lines.
	refusals *refusalLog

	mu      sync.Mutex
	cur     *Session
	changed chan struct{} // closed (and replaced) whenever cur, cand or split changes
	// cand is the candidate version (canary or shadow, see release.go)
	// beside cur, for the chats split selects.
	cand  *Session
	mode  Mode
	split Split
}

// Route returns a new route for the plugin named name.
func (d *Dispatcher) Route(name string) *Route {
	// Resolving the series starts them at zero, so dashboards and alerts
	// see the plugin (and rates work) before anything happens.
	return &Route{d: d, name: name, m: d.metrics.forPlugin(name), holds: newHolds(d.cfg.AfterFunc), refusals: newRefusalLog(),
		changed: make(chan struct{})}
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
	r.changedLocked()
	return prev
}

// Attach opens p's Handle stream and makes it the current session: new
// deliveries go to it from now on. The previous session, if any, is
// detached and returned; the caller drains and stops it.
func (r *Route) Attach(ctx context.Context, p Plugin) (*Session, *Session, error) {
	s, err := r.open(ctx, p)
	if err != nil {
		return nil, nil, err
	}
	prev := r.setCurrent(s)
	if prev != nil {
		prev.st.Detach()
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
	s.st.Detach()
}

// acquire waits for the session the delivery's chat is routed to (see
// pick) to accept it; it also returns the shadow that gets a copy, if any.
func (r *Route) acquire(ctx context.Context, del *bus.Delivery) (*Session, *Session, error) {
	for {
		s, shadow, changed := r.pick(del)
		if s != nil && s.st.Acquire() {
			return s, shadow, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
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
	work := keyed.New(4 * n)
	var workers sync.WaitGroup
	for range n {
		workers.Add(1)
		go func() { defer workers.Done(); r.worker(ctx, work) }()
	}
	var consumers []bus.Consumer
	var readers sync.WaitGroup
	stop := func() {
		readers.Wait()
		work.Close()
		workers.Wait()
		// Retries still waiting out a retry_after go back to the bus now:
		// closing a consumer waits for what it handed out.
		r.holds.flush()
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
				work.Put(del)
			}
		}()
	}
	if d.cfg.DeadLetters != nil {
		for _, topic := range d.cfg.Topics {
			c, err := d.bus.Subscribe(ctx, bus.SubscribeOptions{Topic: DeadLetterTopic(topic, r.name),
				Subscription: dlq.IndexSubscription, MaxDeliveries: 0})
			if err != nil {
				stop()
				return fmt.Errorf("subscribing to %s's dead letters on %s: %w", r.name, topic, err)
			}
			consumers = append(consumers, c)
			readers.Add(1)
			go func() { defer readers.Done(); dlq.Index(ctx, c, d.cfg.DeadLetters, r.name, topic, d.logger) }()
		}
	}
	if subscribed != nil {
		subscribed()
	}
	<-ctx.Done()
	stop()
	return nil
}

// worker handles deliveries one at a time, a chat's in order (see
// keyed.Queue). On shutdown it finishes what is queued if an instance is
// serving (routes stop before instances do); with none (crashed,
// quarantined, disabled) it nacks them for redelivery at once.
func (r *Route) worker(ctx context.Context, work *keyed.Queue) {
	for {
		del, ok := work.Take()
		if !ok {
			return
		}
		var s, shadow *Session
		if ctx.Err() != nil {
			if cur, _, _ := r.pick(del); cur != nil && cur.st.Acquire() {
				s = cur
			}
		} else if cur, sh, err := r.acquire(ctx, del); err == nil {
			s, shadow = cur, sh
		}
		if s == nil {
			_ = del.Nack()
			work.Done(del)
			continue
		}
		res := s.process(ctx, del)
		s.st.Release()
		if shadow != nil && res.delivered && shadow.st.Acquire() {
			// After the stable result, so the chat's order holds for the
			// shadow too; the real delivery is already settled.
			shadow.shadow(ctx, del, res)
			shadow.st.Release()
		}
		work.Done(del)
	}
}
