package dispatch

//go:generate go run golang.org/x/tools/cmd/stringer@v0.53.0 -type=Outcome -linecomment

// Outcome is how a delivery ended: the value of the outcome label of
// larkway_dispatch_results_total and of the larkway.outcome span attribute.
// The names (String, from the line comments) are part of the metric's
// contract: dashboards and alerts select on them (docs/operations.md).
type Outcome uint8

const (
	// OutcomeDone: the plugin answered DONE and its actions were performed;
	// the event is acknowledged.
	OutcomeDone Outcome = iota // done
	// OutcomeRetry: the plugin answered RETRY; redelivered after the
	// backoff or its retry_after, whichever is longer.
	OutcomeRetry // retry
	// OutcomeFailed: the plugin answered FAILED (or nothing valid); the
	// event is dead-lettered.
	OutcomeFailed // failed
	// OutcomeTimeout: no result before the deadline; redelivered.
	OutcomeTimeout // timeout
	// OutcomeStreamError: the plugin's stream broke (or the delivery could
	// not be sent); redelivered at once to the next instance.
	OutcomeStreamError // stream_error
	// OutcomeActionRetry: the plugin answered DONE but its actions could not
	// all be performed; redelivered.
	OutcomeActionRetry // action_retry
	// OutcomeUnknownResult is not a delivery's: a result arrived for no
	// delivery waited for (late after a timeout, or made up) and was dropped.
	OutcomeUnknownResult // unknown_result
)

// numOutcomes sizes tables indexed by Outcome.
const numOutcomes = int(OutcomeUnknownResult) + 1
