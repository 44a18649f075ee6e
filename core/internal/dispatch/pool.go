package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/larkway/larkway/core/internal/dispatch/stream"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// transport is what a Session delivers over: one instance's stream, or a
// pool of instance streams (pool.go). The Route only counts deliveries in
// and out of it; which instance takes a delivery is decided below it.
type transport interface {
	Broken() <-chan struct{}
	Err() error
	Active() int
	Acquire() bool
	Release()
	Detach()
	Drain(ctx context.Context) error
	Close()
	// Deliver sends one delivery of chat key and returns its result and the
	// instance stream that answered (for its ResultAck).
	Deliver(ctx context.Context, key string, attempt int, payload []byte) (*pluginv1.Result, *stream.Session, error)
}

// single is the transport of a plugin with one instance.
type single struct{ *stream.Session }

func (s single) Deliver(ctx context.Context, _ string, attempt int, payload []byte) (*pluginv1.Result, *stream.Session, error) {
	res, err := s.Session.Deliver(ctx, attempt, payload)
	return res, s.Session, err
}

// openTransport opens p's stream, or a stream per member when p is a Pool.
func (r *Route) openTransport(ctx context.Context, p Plugin, opts stream.Options) (transport, error) {
	if pl, ok := p.(Pool); ok {
		return openPool(ctx, pl, opts, r.d.logger.With("plugin", opts.Name))
	}
	st, err := stream.Open(ctx, p.Service(), opts)
	if err != nil {
		return nil, err
	}
	return single{st}, nil
}

// Pool is a Plugin served by several interchangeable instances — a remote
// plugin's resolved endpoints. The Route still sees one Session per
// version: the Session keeps one Handle stream per member and sends each
// chat's deliveries to one member at a time (see pool).
type Pool interface {
	Plugin
	// Members are the instances serving now.
	Members() []Member
	// Changed is closed once Members has changed since it was called.
	Changed() <-chan struct{}
}

// Member is one instance of a Pool.
type Member struct {
	// ID is stable while the instance lives (its address).
	ID      string
	Service pluginv1.PluginServiceClient
}

// maxPoolTries bounds how often one delivery moves to another member after
// its member's stream broke; past it the delivery is nacked for the bus.
const maxPoolTries = 4

// pool is the transport over a Pool's members. A chat goes to the member
// its key hashes highest with (rendezvous hashing), so a member that comes
// or goes moves only its own share of the chats. Per-chat order needs
// nothing more: the Route hands a chat's next delivery out only once the
// previous one settled, wherever it went.
//
// A member whose stream breaks is dropped at once, and the deliveries it
// held go to the chat's next member within the same claim (no bus
// redelivery, so the chat's order and the dedup claim hold). The pool is
// broken only when no member is left; the supervisor then reconnects it.
type pool struct {
	src  Pool
	opts stream.Options
	log  *slog.Logger

	mu      sync.Mutex
	members map[string]*stream.Session
	ids     []string // members' ids, sorted
	err     error
	broken  chan struct{}

	kick    chan struct{} // a member broke: reconcile
	done    chan struct{} // Close began
	watched chan struct{} // the watcher ended
	bg      sync.WaitGroup

	activeMu sync.Mutex
	active   int
	detached bool
	idle     chan struct{}

	closeOnce sync.Once
}

func openPool(ctx context.Context, src Pool, opts stream.Options, log *slog.Logger) (*pool, error) {
	p := &pool{src: src, opts: opts, log: log, members: map[string]*stream.Session{}, broken: make(chan struct{}),
		kick: make(chan struct{}, 1), done: make(chan struct{}), watched: make(chan struct{}), idle: make(chan struct{})}
	changed := src.Changed()
	var errs []error
	for _, m := range src.Members() {
		if err := p.add(ctx, m); err != nil {
			errs = append(errs, err)
		}
	}
	if len(p.ids) == 0 {
		p.closeMembers()
		errs = append(errs, fmt.Errorf("opening %s streams: no instance", opts.Name))
		return nil, errors.Join(errs...)
	}
	go func() { defer close(p.watched); p.watch(changed) }()
	return p, nil
}

// add opens a stream to m and makes it a member.
func (p *pool) add(ctx context.Context, m Member) error {
	st, err := stream.Open(ctx, m.Service, p.opts)
	if err != nil {
		p.log.Warn("remote instance left out: its stream did not open", "instance", m.ID, "err", err)
		return fmt.Errorf("instance %s: %w", m.ID, err)
	}
	p.mu.Lock()
	p.members[m.ID] = st
	p.ids = append(p.ids, m.ID)
	slices.Sort(p.ids)
	p.mu.Unlock()
	p.bg.Add(1)
	go func() {
		defer p.bg.Done()
		select {
		case <-st.Broken():
			select {
			case p.kick <- struct{}{}:
			default:
			}
		case <-p.done:
		}
	}()
	return nil
}

// drop removes member id if st is still its stream, and ends the stream:
// deliveries still on it fail with ErrBroken and move to other members.
func (p *pool) drop(id string, st *stream.Session, why string, err error) {
	p.mu.Lock()
	if p.members[id] != st {
		p.mu.Unlock()
		return
	}
	delete(p.members, id)
	p.ids = slices.DeleteFunc(p.ids, func(s string) bool { return s == id })
	left := len(p.ids)
	if left == 0 && p.err == nil {
		p.err = fmt.Errorf("no instance left (the last one: %s: %w)", why, err)
		close(p.broken)
	}
	p.mu.Unlock()
	p.log.Warn("remote instance dropped; its chats move to the others", "instance", id, "reason", why, "err", err, "instances_left", left)
	p.bg.Add(1)
	go func() {
		defer p.bg.Done()
		if why == "gone" { // let what it holds finish
			ctx, cancel := context.WithTimeout(context.Background(), p.opts.Deadline+time.Second)
			_ = st.Drain(ctx)
			cancel()
			return
		}
		st.Close()
	}()
}

// watch follows the Pool's membership and the members' streams until Close.
func (p *pool) watch(changed <-chan struct{}) {
	for {
		select {
		case <-p.done:
			return
		case <-p.kick:
		case <-changed:
			changed = p.src.Changed()
		}
		p.reconcile()
	}
}

// reconcile drops members whose stream broke or that left the Pool, and
// opens streams to members that joined.
func (p *pool) reconcile() {
	want := map[string]Member{}
	for _, m := range p.src.Members() {
		want[m.ID] = m
	}
	p.mu.Lock()
	type gone struct {
		id  string
		st  *stream.Session
		why string
	}
	var drops []gone
	for id, st := range p.members {
		select {
		case <-st.Broken():
			drops = append(drops, gone{id, st, "stream broke"})
			continue
		default:
		}
		if _, ok := want[id]; !ok {
			drops = append(drops, gone{id, st, "gone"})
		}
	}
	var joins []Member
	if p.err == nil {
		for id, m := range want {
			if _, ok := p.members[id]; !ok {
				joins = append(joins, m)
			}
		}
	}
	p.mu.Unlock()
	for _, d := range drops {
		p.drop(d.id, d.st, d.why, d.st.Err())
	}
	for _, m := range joins {
		if p.isBroken() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), p.opts.Deadline)
		if err := p.add(ctx, m); err == nil {
			p.log.Info("remote instance joined", "instance", m.ID)
		}
		cancel()
	}
}

func (p *pool) isBroken() bool {
	select {
	case <-p.broken:
		return true
	default:
		return false
	}
}

// pick is the member chat key goes to: the one whose id hashes highest
// with the key (rendezvous hashing).
func (p *pool) pick(key string) (string, *stream.Session) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var best string
	var top uint64
	for _, id := range p.ids {
		if h := rendezvous(id, key); best == "" || h > top {
			best, top = id, h
		}
	}
	if best == "" {
		return "", nil
	}
	return best, p.members[best]
}

// rendezvous is 64-bit FNV-1a of id, a separator and key, inlined: no
// allocation per delivery.
func rendezvous(id, key string) uint64 {
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	for i := 0; i < len(id); i++ {
		h = (h ^ uint64(id[i])) * prime
	}
	h = (h ^ 0xff) * prime
	for i := 0; i < len(key); i++ {
		h = (h ^ uint64(key[i])) * prime
	}
	// FNV's last bytes move only the low bits much: finalize (SplitMix64).
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	return h ^ h>>31
}

func (p *pool) Deliver(ctx context.Context, key string, attempt int, payload []byte) (*pluginv1.Result, *stream.Session, error) {
	for try := 1; ; try++ {
		id, st := p.pick(key)
		if st == nil {
			return nil, nil, stream.ErrBroken
		}
		// Counted on the member too, so a member that leaves the pool
		// drains what it holds before its stream closes.
		if !st.Acquire() {
			if try < maxPoolTries {
				continue // it left between pick and here
			}
			return nil, nil, stream.ErrBroken
		}
		res, err := st.Deliver(ctx, attempt, payload)
		st.Release()
		if errors.Is(err, stream.ErrBroken) && try < maxPoolTries {
			p.drop(id, st, "stream broke", st.Err())
			continue
		}
		return res, st, err
	}
}

func (p *pool) Broken() <-chan struct{} { return p.broken }

func (p *pool) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

func (p *pool) Active() int {
	p.activeMu.Lock()
	defer p.activeMu.Unlock()
	return p.active
}

func (p *pool) Acquire() bool {
	p.activeMu.Lock()
	defer p.activeMu.Unlock()
	if p.detached {
		return false
	}
	p.active++
	return true
}

func (p *pool) Release() {
	p.activeMu.Lock()
	defer p.activeMu.Unlock()
	p.active--
	if p.detached && p.active == 0 {
		closeOnce(p.idle)
	}
}

func (p *pool) Detach() {
	p.activeMu.Lock()
	defer p.activeMu.Unlock()
	p.detached = true
	if p.active == 0 {
		closeOnce(p.idle)
	}
}

func closeOnce(c chan struct{}) {
	select {
	case <-c:
	default:
		close(c)
	}
}

// Drain is stream.Session's Drain over every member.
func (p *pool) Drain(ctx context.Context) error {
	p.Detach()
	var err error
	select {
	case <-p.idle:
	case <-p.broken:
	case <-ctx.Done():
		err = fmt.Errorf("draining %s: %w", p.opts.Name, ctx.Err())
	}
	p.Close()
	return err
}

// Close ends every member's stream at once. It is idempotent.
func (p *pool) Close() {
	p.closeOnce.Do(func() {
		close(p.done)
		<-p.watched
		p.closeMembers()
		p.bg.Wait()
	})
}

func (p *pool) closeMembers() {
	p.mu.Lock()
	sts := make([]*stream.Session, 0, len(p.members))
	for _, st := range p.members {
		sts = append(sts, st)
	}
	p.members, p.ids = map[string]*stream.Session{}, nil
	p.mu.Unlock()
	for _, st := range sts {
		st.Close()
	}
}
