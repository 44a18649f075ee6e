package console

import (
	"context"
	"testing"

	"github.com/larkway/larkway/core/internal/bus"
)

// fullBus is a publisher at its bound.
type fullBus struct{ room chan struct{} }

func (f *fullBus) Publish(context.Context, string, bus.Message) error { return bus.ErrFull }
func (f *fullBus) Room() <-chan struct{}                              { return f.room }

type plainBus struct{}

func (plainBus) Publish(context.Context, string, bus.Message) error { return nil }

// The live tail's tap must not hide the bus's bound from ingest.
func TestTapKeepsTheBusBound(t *testing.T) {
	h := NewHub()
	full := &fullBus{room: make(chan struct{})}
	a, ok := h.Publisher(full).(bus.Admitter)
	if !ok {
		t.Fatal("the tapped publisher is not a bus.Admitter")
	}
	if a.Room() != full.room {
		t.Fatal("the tap did not pass on the bus's Room")
	}
	if r := h.Publisher(plainBus{}).(bus.Admitter).Room(); r != nil {
		t.Fatal("a bus without a bound must always have room")
	}
}
