package larkway

import (
	"context"
	"errors"
	"testing"
	"time"
)

type ctxKey struct{}

// The lazy context must be indistinguishable from context.WithDeadline
// through the context API, whichever method is called first.
func TestDeadlineCtxMatchesWithDeadline(t *testing.T) {
	type observed struct {
		err, cause error
		done       bool
		value      any
		deadline   time.Time
	}
	observe := func(ctx context.Context) observed {
		o := observed{err: ctx.Err(), cause: context.Cause(ctx), value: ctx.Value(ctxKey{})}
		o.deadline, _ = ctx.Deadline()
		select {
		case <-ctx.Done():
			o.done = true
		default:
		}
		return o
	}
	future, past := time.Now().Add(time.Hour), time.Now().Add(-time.Second)
	cases := []struct {
		name           string
		deadline       time.Time
		cancelParent   bool
		endBeforeUse   bool
		wantErr        error
		wantDoneClosed bool
	}{
		{"live", future, false, false, nil, false},
		{"expired", past, false, false, context.DeadlineExceeded, true},
		{"parent cancelled", future, true, false, context.Canceled, true},
		{"used after the delivery ended", future, false, true, context.Canceled, true},
		{"used after the delivery ended past its deadline", past, false, true, context.DeadlineExceeded, true},
		{"used after the delivery ended with its parent", future, true, true, context.Canceled, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, first := range []string{"Err", "Done", "Value", "child"} {
				parent, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "v"))
				lazy := newDeadlineCtx(parent, tc.deadline)
				real, realCancel := context.WithDeadline(parent, tc.deadline)
				if tc.cancelParent {
					cancel()
				}
				if tc.endBeforeUse {
					lazy.end()
					realCancel()
				}
				switch first {
				case "Err":
					_ = lazy.Err()
				case "Done":
					_ = lazy.Done()
				case "Value":
					_ = lazy.Value(ctxKey{})
				case "child":
					child, cc := context.WithCancel(lazy)
					defer cc()
					if tc.wantDoneClosed {
						<-child.Done() // the child sees the lazy context's end
					}
				}
				got, want := observe(lazy), observe(real)
				if got != want {
					t.Errorf("%s first: lazy %+v, WithDeadline %+v", first, got, want)
				}
				if !errors.Is(got.err, tc.wantErr) || got.done != tc.wantDoneClosed {
					t.Errorf("%s first: err %v done %v, want %v %v", first, got.err, got.done, tc.wantErr, tc.wantDoneClosed)
				}
				lazy.end()
				realCancel()
				cancel()
			}
		})
	}
}

// A handler waiting on Done is woken by the deadline, and a child context
// made before the deadline is cancelled with it.
func TestDeadlineCtxFires(t *testing.T) {
	lazy := newDeadlineCtx(context.Background(), time.Now().Add(20*time.Millisecond))
	defer lazy.end()
	child, cancel := context.WithCancel(lazy)
	defer cancel()
	<-child.Done()
	<-lazy.Done()
	if !errors.Is(lazy.Err(), context.DeadlineExceeded) || !errors.Is(context.Cause(child), context.DeadlineExceeded) {
		t.Fatalf("err %v, child cause %v", lazy.Err(), context.Cause(child))
	}
}

// end cancels a built context, as WithDeadline's cancel does, and a parent
// deadline earlier than the delivery's is the one reported.
func TestDeadlineCtxEndAndParentDeadline(t *testing.T) {
	lazy := newDeadlineCtx(context.Background(), time.Now().Add(time.Hour))
	done := lazy.Done()
	lazy.end()
	<-done
	if !errors.Is(lazy.Err(), context.Canceled) {
		t.Fatalf("err %v after end", lazy.Err())
	}

	early := time.Now().Add(time.Minute)
	parent, cancel := context.WithDeadline(context.Background(), early)
	defer cancel()
	lazy = newDeadlineCtx(parent, time.Now().Add(time.Hour))
	defer lazy.end()
	if d, ok := lazy.Deadline(); !ok || !d.Equal(early) {
		t.Fatalf("deadline %v %v, want the parent's %v", d, ok, early)
	}
}

// Concurrent first uses build one context (run with -race).
func TestDeadlineCtxConcurrentUse(t *testing.T) {
	lazy := newDeadlineCtx(context.Background(), time.Now().Add(time.Hour))
	chans := make(chan (<-chan struct{}), 8)
	for range 8 {
		go func() { chans <- lazy.Done() }()
	}
	first := <-chans
	for range 7 {
		if c := <-chans; c != first {
			t.Fatal("two Done channels")
		}
	}
	lazy.end()
	<-first
}

// A parent cancelled after the delivery ended does not change what the
// context says, as with WithDeadline after its cancel ran.
func TestDeadlineCtxEndedThenParentCancelled(t *testing.T) {
	parent, cancel := context.WithCancelCause(context.Background())
	lazy := newDeadlineCtx(parent, time.Now().Add(time.Hour))
	real, realCancel := context.WithDeadline(parent, time.Now().Add(time.Hour))
	lazy.end()
	realCancel()
	cancel(errors.New("later"))
	for name, ctx := range map[string]context.Context{"lazy": lazy, "WithDeadline": real} {
		if !errors.Is(ctx.Err(), context.Canceled) || !errors.Is(context.Cause(ctx), context.Canceled) {
			t.Errorf("%s: err %v, cause %v; want canceled", name, ctx.Err(), context.Cause(ctx))
		}
	}
}
