// Package ingest receives Lark's events over HTTPS webhooks, authenticates
// and normalizes them, and acknowledges Lark only after the bus has durably
// stored the event: a 200 always means "stored", and anything not stored gets
// a 5xx so Lark retries (15 s, 5 min, 1 h, 6 h).
package ingest

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/envelope"
)

// App is one Lark app's ingest settings.
type App struct {
	ID                string
	VerificationToken string
	EncryptKey        string
	EventPath         string
}

// Config tunes the server.
type Config struct {
	Apps           []App
	MaxBodyBytes   int64
	PublishTimeout time.Duration
}

// Server is the webhook HTTP handler.
type Server struct {
	cfg     Config
	pub     bus.Publisher
	logger  *slog.Logger
	mux     *http.ServeMux
	metrics *metrics
}

type metrics struct {
	requests  *prometheus.CounterVec
	rejected  *prometheus.CounterVec
	published prometheus.Histogram
}

// New builds the handler; it does no I/O. reg receives the ingest metrics.
func New(cfg Config, pub bus.Publisher, logger *slog.Logger, reg prometheus.Registerer) *Server {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "larkway_ingest_requests_total", Help: "Webhook requests by app, outcome and HTTP status.",
		}, []string{"app", "outcome", "status"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "larkway_ingest_rejections_total", Help: "Rejected webhook requests by app and reason.",
		}, []string{"app", "reason"}),
		published: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "larkway_ingest_publish_duration_seconds", Help: "Time for the bus to durably accept an event.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.rejected, m.published)
	}
	s := &Server{cfg: cfg, pub: pub, logger: logger.With("component", "ingest"), mux: http.NewServeMux(), metrics: m}
	for _, a := range cfg.Apps {
		s.mux.Handle(a.EventPath, s.eventHandler(a))
	}
	return s
}

// ServeHTTP routes by app path; unknown paths get 404 with a JSON body.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h, pattern := s.mux.Handler(r)
	if pattern == "" {
		s.reject(w, "", http.StatusNotFound, "unknown_path", "no app is configured at "+r.URL.Path)
		return
	}
	h.ServeHTTP(w, r)
}

// errorBody is every error response's JSON shape.
type errorBody struct {
	Error  string `json:"error"`
	Reason string `json:"reason"`
}

func (s *Server) reject(w http.ResponseWriter, app string, status int, reason, msg string) {
	s.metrics.rejected.WithLabelValues(app, reason).Inc()
	s.metrics.requests.WithLabelValues(app, "rejected", strconv.Itoa(status)).Inc()
	writeJSON(w, status, errorBody{Error: msg, Reason: reason})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) eventHandler(app App) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			s.reject(w, app.ID, http.StatusMethodNotAllowed, "method", "use POST")
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				s.reject(w, app.ID, http.StatusRequestEntityTooLarge, "oversize", fmt.Sprintf("body exceeds %d bytes", s.cfg.MaxBodyBytes))
				return
			}
			s.reject(w, app.ID, http.StatusBadRequest, "read", "reading body failed")
			return
		}
		var probe envelope.Probe
		if err := json.Unmarshal(body, &probe); err != nil {
			s.reject(w, app.ID, http.StatusBadRequest, "not_json", "body is not a JSON object")
			return
		}
		if probe.Encrypt != "" {
			// Decryption and signature checks arrive with the full ingest;
			// until then an encrypted body cannot be authenticated.
			s.reject(w, app.ID, http.StatusBadRequest, "undecryptable", "encrypted events are not supported by this app's configuration")
			return
		}
		if !tokenOK(probe.VerificationToken(), app.VerificationToken) {
			s.reject(w, app.ID, http.StatusUnauthorized, "bad_token", "verification token does not match")
			return
		}
		if probe.IsChallenge() {
			s.metrics.requests.WithLabelValues(app.ID, "challenge", "200").Inc()
			writeJSON(w, http.StatusOK, map[string]string{"challenge": probe.Challenge})
			return
		}
		ev, err := envelope.Normalize(app.ID, body)
		if err != nil {
			reason := "malformed"
			if errors.Is(err, envelope.ErrUnknownSchema) {
				reason = "unknown_schema"
			}
			s.reject(w, app.ID, http.StatusBadRequest, reason, err.Error())
			return
		}
		msg, err := envelope.Encode(ev)
		if err != nil {
			s.reject(w, app.ID, http.StatusInternalServerError, "encode", "encoding event failed")
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.PublishTimeout)
		defer cancel()
		start := time.Now()
		if err := s.pub.Publish(ctx, envelope.Topic(app.ID), msg); err != nil {
			s.logger.Warn("event not stored; Lark will retry", "app", app.ID, "event_id", ev.GetEventId(), "err", err)
			s.reject(w, app.ID, http.StatusServiceUnavailable, "bus_unavailable", "event could not be stored; retry later")
			return
		}
		s.metrics.published.Observe(time.Since(start).Seconds())
		s.metrics.requests.WithLabelValues(app.ID, "stored", "200").Inc()
		writeJSON(w, http.StatusOK, map[string]string{"msg": "success"})
	})
}

// tokenOK compares in constant time; an empty expected token never matches.
func tokenOK(got, want string) bool {
	return want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}
