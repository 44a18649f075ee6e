package larkemu

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"net/http"
	"time"
)

// Faults are failures the emulator injects into OpenAPI calls (not the
// token endpoint, so clients can still authenticate).
type Faults struct {
	// ErrorRate is the share of calls (0 to 1) answered with ErrorStatus
	// and a plain-text body, as a failing proxy or backend does.
	ErrorRate float64
	// ErrorStatus is the status of injected errors (default 500).
	ErrorStatus int
	// Latency is added before every call is answered.
	Latency time.Duration
	// RateLimitStorm answers every call with HTTP 429, code 99991400 and
	// x-ogw-ratelimit-reset set to the storm's remaining whole seconds, for
	// this long from when the faults are set.
	RateLimitStorm time.Duration
	// InvalidateTokens invalidates every issued token once, when the faults
	// are set (the next call with one answers 99991663).
	InvalidateTokens bool
}

// faultState is the active faults. Guarded by Emulator.mu.
type faultState struct {
	errorRate   float64
	errorStatus int
	latency     time.Duration
	stormUntil  time.Time
}

// SetFaults replaces the active faults; Faults{} clears them. A storm starts
// now; token invalidation happens now.
func (e *Emulator) SetFaults(f Faults) {
	e.mu.Lock()
	defer e.mu.Unlock()
	status := f.ErrorStatus
	if status == 0 {
		status = http.StatusInternalServerError
	}
	e.faults = faultState{errorRate: min(max(f.ErrorRate, 0), 1), errorStatus: status, latency: max(f.Latency, 0)}
	if f.RateLimitStorm > 0 {
		e.faults.stormUntil = e.now().Add(f.RateLimitStorm)
	}
	if f.InvalidateTokens {
		e.expireTokensLocked()
	}
	e.log.Info("faults set", "error_rate", e.faults.errorRate, "error_status", status, "latency", f.Latency,
		"storm", f.RateLimitStorm, "invalidate_tokens", f.InvalidateTokens)
}

// injectFault delays the call and answers it with an injected failure,
// reporting whether it did.
func (e *Emulator) injectFault(w http.ResponseWriter, r *http.Request) bool {
	e.mu.Lock()
	latency := e.faults.latency
	e.mu.Unlock()
	if latency > 0 {
		t := time.NewTimer(latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return true // the client is gone; nothing to answer
		}
	}
	e.mu.Lock()
	f := e.faults
	now := e.now()
	e.mu.Unlock()
	if now.Before(f.stormUntil) {
		e.writeGatewayLimit(w, e.limits.AppPerSecond.Count, f.stormUntil.Sub(now))
		return true
	}
	if f.errorRate > 0 && rand.Float64() < f.errorRate {
		http.Error(w, http.StatusText(f.errorStatus), f.errorStatus)
		return true
	}
	return false
}

// FaultsRequest is the JSON body of POST /_emu/faults. Fields left out are
// off.
type FaultsRequest struct {
	ErrorRate             float64 `json:"error_rate"`
	ErrorStatus           int     `json:"error_status"`
	LatencyMS             int     `json:"latency_ms"`
	RateLimitStormSeconds float64 `json:"rate_limit_storm_seconds"`
	InvalidateTokens      bool    `json:"invalidate_tokens"`
}

// faultsStatus is the JSON answer of GET and POST /_emu/faults.
type faultsStatus struct {
	ErrorRate        float64 `json:"error_rate"`
	ErrorStatus      int     `json:"error_status"`
	LatencyMS        int64   `json:"latency_ms"`
	StormRemainingMS int64   `json:"rate_limit_storm_remaining_ms"`
}

func (e *Emulator) faultsStatus() faultsStatus {
	e.mu.Lock()
	defer e.mu.Unlock()
	f := e.faults
	return faultsStatus{
		ErrorRate:        f.errorRate,
		ErrorStatus:      f.errorStatus,
		LatencyMS:        f.latency.Milliseconds(),
		StormRemainingMS: max(0, f.stormUntil.Sub(e.now()).Milliseconds()),
	}
}

// handleFaults serves GET, POST and DELETE /_emu/faults.
func (e *Emulator) handleFaults(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodPost:
		var req FaultsRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, "", envelope{Code: codeBadParam, Msg: "faults body: " + err.Error()})
			return
		}
		if req.ErrorRate < 0 || req.ErrorRate > 1 || req.LatencyMS < 0 || req.RateLimitStormSeconds < 0 ||
			math.IsNaN(req.ErrorRate) || (req.ErrorStatus != 0 && (req.ErrorStatus < 500 || req.ErrorStatus > 599)) {
			writeJSON(w, http.StatusBadRequest, "", envelope{Code: codeBadParam,
				Msg: "error_rate must be in [0,1], error_status a 5xx, latency_ms and rate_limit_storm_seconds not negative"})
			return
		}
		e.SetFaults(Faults{
			ErrorRate:        req.ErrorRate,
			ErrorStatus:      req.ErrorStatus,
			Latency:          time.Duration(req.LatencyMS) * time.Millisecond,
			RateLimitStorm:   time.Duration(req.RateLimitStormSeconds * float64(time.Second)),
			InvalidateTokens: req.InvalidateTokens,
		})
	case http.MethodDelete:
		e.SetFaults(Faults{})
	}
	writeJSON(w, http.StatusOK, "", e.faultsStatus())
}
