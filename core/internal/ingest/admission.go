package ingest

import (
	"context"
	"net/http"
	"time"
)

// Admission control. Verifying and decrypting a webhook costs several times
// what answering it does, and the same cores run dispatch. Two things keep a
// peak from starving dispatch of the CPU that makes room:
//
//   - A request is admitted only while the bus has room (bus.Admitter).
//     At the bound it waits, parked, for an acknowledgement to make room,
//     up to AdmissionWait, and then gets a 503 with Retry-After — before
//     its body is read, verified or decrypted, so the refusal costs about
//     what a bare responder's answer does. Closed-loop senders are thereby
//     paced at the rate dispatch makes room, instead of spinning on 503s.
//   - At most MaxInFlight requests read, verify, decrypt and encode at
//     once; the others wait (parked, within the same AdmissionWait) for a
//     slot. The slot is released before the publish, so a peak queues at
//     the bus's group commit, where waiting is cheap, not as runnable
//     goroutines competing with dispatch for the cores.
//
// A request is refused only before any of its work: once its event is
// stored it is answered 200, and a publish that finds the bus filled after
// admission waits for room within the publish timeout rather than throwing
// the verified event away.

// retryAfter is the Retry-After of an overload 503, in seconds. Lark keeps
// its own retry schedule; other senders (and load generators) use it.
const retryAfter = "1"

// admit waits for the bus to have room and for an ingest slot, until
// s.cfg.AdmissionWait has passed or ctx ends. On success the caller must
// call s.release() when its CPU work is done.
func (s *Server) admit(ctx context.Context) bool {
	room := s.room()
	if room == nil {
		select {
		case s.slots <- struct{}{}:
			return true // the common case: no timer, no wait
		default:
		}
	}
	s.metrics.waiting.Inc()
	defer s.metrics.waiting.Dec()
	timer := time.NewTimer(s.cfg.AdmissionWait)
	defer timer.Stop()
	for room != nil {
		select {
		case <-room:
			room = s.room()
		case <-timer.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
	select {
	case s.slots <- struct{}{}:
		return true
	case <-timer.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// release frees the slot admit took.
func (s *Server) release() { <-s.slots }

// room is the bus's Room, or nil for a bus without a bound.
func (s *Server) room() <-chan struct{} {
	if s.admitter == nil {
		return nil
	}
	return s.admitter.Room()
}

// overloaded is the cheap refusal: nothing of the request has been read.
func (s *Server) overloaded(w http.ResponseWriter, app *appState) {
	app.overloaded.Inc()
	app.overloadedReq.Inc()
	h := w.Header()
	h["Retry-After"] = retryAfterValue
	h["Content-Type"] = jsonContentType
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write(overloadedBody)
}

var retryAfterValue = []string{retryAfter}

// reasonOverloaded labels refusals at the admission bound.
const reasonOverloaded = "overloaded"

var overloadedBody = []byte(`{"error":"the bus is at its bound; retry later","reason":"overloaded"}` + "\n")
