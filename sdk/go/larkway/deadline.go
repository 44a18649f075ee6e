package larkway

import (
	"context"
	"sync"
	"time"
)

// deadlineCtx is context.WithDeadline built on first need. Most handlers
// never wait on their context; for them the timer and the registration with
// the parent that WithDeadline makes per delivery are pure cost (7% of the
// no-op bench plugin's CPU, by pprof). The real deadline context is built as
// soon as anything could observe the difference: Done, a child context
// (which calls Done), an expired deadline or a cancelled parent seen by Err
// or Value, or any use after the delivery ended. The standard library has no
// lazy variant, hence this type.
type deadlineCtx struct {
	parent   context.Context
	deadline time.Time

	mu     sync.Mutex
	ctx    context.Context // nil until built
	cancel context.CancelFunc
	ended  bool // the delivery returned before anything built ctx
	// At the end: the parent's error, and whether the deadline had passed.
	endErr     error
	endExpired bool
}

func newDeadlineCtx(parent context.Context, deadline time.Time) *deadlineCtx {
	return &deadlineCtx{parent: parent, deadline: deadline}
}

// built returns the real context, building it first if need be.
func (c *deadlineCtx) built() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx == nil {
		if c.ended {
			c.ctx = c.afterEnd()
		} else {
			c.ctx, c.cancel = context.WithDeadline(c.parent, c.deadline)
		}
	}
	return c.ctx
}

// afterEnd is what WithDeadline's context would be after its cancel ran at
// the end: ended by the parent, by the deadline, or by the cancel, whichever
// came first; a parent cancelled later does not change it.
func (c *deadlineCtx) afterEnd() context.Context {
	switch {
	case c.endErr != nil:
		ctx, cancel := context.WithCancel(c.parent)
		cancel() // the parent is done: its error and cause show through
		return ctx
	case c.endExpired:
		ctx, cancel := context.WithDeadline(context.WithoutCancel(c.parent), c.deadline)
		cancel() // already expired: the deadline's error stays
		return ctx
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(c.parent))
	cancel()
	return ctx
}

// lazy reports whether the context may still act as its parent: not built,
// not ended, parent alive, deadline ahead.
func (c *deadlineCtx) lazy() bool {
	c.mu.Lock()
	unbuilt := c.ctx == nil && !c.ended
	c.mu.Unlock()
	return unbuilt && c.parent.Err() == nil && time.Now().Before(c.deadline)
}

// end is the cancel of WithDeadline: it runs when the delivery returns.
func (c *deadlineCtx) end() {
	c.mu.Lock()
	if c.ctx == nil && !c.ended {
		c.ended = true
		c.endErr, c.endExpired = c.parent.Err(), !time.Now().Before(c.deadline)
	}
	cancel := c.cancel
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

func (c *deadlineCtx) Deadline() (time.Time, bool) {
	if d, ok := c.parent.Deadline(); ok && d.Before(c.deadline) {
		return d, true
	}
	return c.deadline, true
}

func (c *deadlineCtx) Done() <-chan struct{} { return c.built().Done() }

func (c *deadlineCtx) Err() error {
	if c.lazy() {
		return nil
	}
	return c.built().Err()
}

// Value answers from the parent while lazy. Once not, it asks the built
// context, so that context.Cause (which finds the nearest cancel context
// through Value) sees this one.
func (c *deadlineCtx) Value(key any) any {
	if c.lazy() {
		return c.parent.Value(key)
	}
	return c.built().Value(key)
}

func (c *deadlineCtx) String() string { return "larkway.deliveryContext" }
