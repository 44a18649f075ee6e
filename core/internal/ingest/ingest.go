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
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/callback"
	"github.com/larkway/larkway/core/internal/envelope"
	"github.com/larkway/larkway/core/internal/telemetry"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// App is one Lark app's ingest settings.
type App struct {
	ID                string
	VerificationToken string
	EncryptKey        string
	EventPath         string
	// CardPath is the legacy card-callback URL path (card.action.trigger_v1);
	// empty disables it.
	CardPath string
}

// Config tunes the server.
type Config struct {
	Apps           []App
	MaxBodyBytes   int64
	PublishTimeout time.Duration
	// ClockSkew is how far X-Lark-Request-Timestamp may be from now (default 5 min).
	ClockSkew time.Duration
	// Replay remembers nonces (default: in-process).
	Replay ReplayCache
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Callbacks carries plugins' card responses back (default: in-process).
	Callbacks callback.Hub
	// Tracer traces webhook requests (nil: no tracing).
	Tracer trace.Tracer
	// CardBudget is how long a card callback waits for the plugin's toast or
	// card before Lark gets {} (default 2 s; Lark allows 3 s).
	CardBudget time.Duration
}

// Lark's signature headers.
const (
	HeaderTimestamp = "X-Lark-Request-Timestamp"
	HeaderNonce     = "X-Lark-Request-Nonce"
	HeaderSignature = "X-Lark-Signature"
)

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
	if cfg.ClockSkew <= 0 {
		cfg.ClockSkew = 5 * time.Minute
	}
	if cfg.Replay == nil {
		cfg.Replay = NewMemoryReplayCache()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Callbacks == nil {
		cfg.Callbacks = callback.NewMemory()
	}
	if cfg.Tracer == nil {
		cfg.Tracer = noop.NewTracerProvider().Tracer("")
	}
	if cfg.CardBudget <= 0 {
		cfg.CardBudget = 2 * time.Second
	}
	s := &Server{cfg: cfg, pub: pub, logger: logger.With("component", "ingest"), mux: http.NewServeMux(), metrics: m}
	for _, a := range cfg.Apps {
		s.mux.Handle(a.EventPath, s.eventHandler(a))
		if a.CardPath != "" {
			s.mux.Handle(a.CardPath, s.legacyCardHandler(a))
		}
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

// readBody enforces POST and the body limit; on failure it has answered.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, app App) ([]byte, bool) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		s.reject(w, app.ID, http.StatusMethodNotAllowed, "method", "use POST")
		return nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.reject(w, app.ID, http.StatusRequestEntityTooLarge, "oversize", fmt.Sprintf("body exceeds %d bytes", s.cfg.MaxBodyBytes))
			return nil, false
		}
		s.reject(w, app.ID, http.StatusBadRequest, "read", "reading body failed")
		return nil, false
	}
	return body, true
}

func (s *Server) eventHandler(app App) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, span := s.cfg.Tracer.Start(r.Context(), "ingest.webhook", trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("larkway.app", app.ID)))
		defer span.End()
		r = r.WithContext(ctx)
		body, ok := s.readBody(w, r, app)
		if !ok {
			return
		}
		plain, probe, rej := s.authenticate(r.Context(), app, r.Header, body)
		if rej != nil {
			s.reject(w, app.ID, rej.status, rej.reason, rej.msg)
			return
		}
		if probe.IsChallenge() {
			s.metrics.requests.WithLabelValues(app.ID, "challenge", "200").Inc()
			writeJSON(w, http.StatusOK, map[string]string{"challenge": probe.Challenge})
			return
		}
		ev, err := envelope.Normalize(app.ID, plain)
		if err != nil {
			reason := "malformed"
			if errors.Is(err, envelope.ErrUnknownSchema) {
				reason = "unknown_schema"
			}
			s.reject(w, app.ID, http.StatusBadRequest, reason, err.Error())
			return
		}
		span.SetAttributes(attribute.String("larkway.event_type", ev.GetEventType()), attribute.String("larkway.event_id", ev.GetEventId()))
		if ev.GetCardAction() != nil {
			s.cardCallback(w, r, app, ev, false)
			return
		}
		if !s.publish(w, r.Context(), app, ev) {
			return
		}
		s.metrics.requests.WithLabelValues(app.ID, "stored", "200").Inc()
		writeJSON(w, http.StatusOK, map[string]string{"msg": "success"})
	})
}

// publish stores ev durably; on failure it has answered 503 (Lark retries).
func (s *Server) publish(w http.ResponseWriter, ctx context.Context, app App, ev *pluginv1.Event) bool {
	msg, err := envelope.Encode(ev)
	if err != nil {
		s.reject(w, app.ID, http.StatusInternalServerError, "encode", "encoding event failed")
		return false
	}
	msg.Properties = telemetry.Inject(ctx, msg.Properties)
	pctx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
	defer cancel()
	start := time.Now()
	if err := s.pub.Publish(pctx, envelope.Topic(app.ID), msg); err != nil {
		s.logger.Warn("event not stored; Lark will retry", "app", app.ID, "event_id", ev.GetEventId(), "err", err)
		s.reject(w, app.ID, http.StatusServiceUnavailable, "bus_unavailable", "event could not be stored; retry later")
		return false
	}
	s.metrics.published.Observe(time.Since(start).Seconds())
	return true
}

// rejection is an authentication failure's answer.
type rejection struct {
	status int
	reason string
	msg    string
}

// authenticate returns the plaintext body and its probe, or why not:
//   - with an Encrypt Key, the body must be encrypted and, unless it is a
//     url_verification (Lark sends those without signature headers), signed:
//     the timestamp must be within the skew window, the SHA-256 signature
//     must match (constant time), and the nonce must be new — checked in
//     that order so forged requests cannot fill the nonce cache;
//   - the verification token is checked on every body, encrypted or not.
func (s *Server) authenticate(ctx context.Context, app App, h http.Header, body []byte) ([]byte, *envelope.Probe, *rejection) {
	var outer envelope.Probe
	if err := json.Unmarshal(body, &outer); err != nil {
		return nil, nil, &rejection{http.StatusBadRequest, "not_json", "body is not a JSON object"}
	}
	plain, probe := body, &outer
	signed := h.Get(HeaderSignature) != ""
	if app.EncryptKey != "" {
		if outer.Encrypt == "" {
			return nil, nil, &rejection{http.StatusBadRequest, "not_encrypted", "this app has an encrypt key: Lark sends encrypted bodies"}
		}
		if signed {
			if rej := s.checkSignature(ctx, app, h, body); rej != nil {
				return nil, nil, rej
			}
		}
		var err error
		if plain, err = Decrypt(outer.Encrypt, app.EncryptKey); err != nil {
			return nil, nil, &rejection{http.StatusBadRequest, "undecryptable", "body could not be decrypted with this app's encrypt key"}
		}
		probe = &envelope.Probe{}
		if err := json.Unmarshal(plain, probe); err != nil {
			return nil, nil, &rejection{http.StatusBadRequest, "not_json", "decrypted body is not a JSON object"}
		}
		if !signed && !probe.IsChallenge() {
			return nil, nil, &rejection{http.StatusUnauthorized, "missing_signature", "X-Lark-Signature is required"}
		}
	} else if outer.Encrypt != "" {
		return nil, nil, &rejection{http.StatusBadRequest, "undecryptable", "encrypted body, but this app has no encrypt key configured"}
	}
	if !tokenOK(probe.VerificationToken(), app.VerificationToken) {
		return nil, nil, &rejection{http.StatusUnauthorized, "bad_token", "verification token does not match"}
	}
	return plain, probe, nil
}

func (s *Server) checkSignature(ctx context.Context, app App, h http.Header, body []byte) *rejection {
	return s.checkSigned(ctx, app, h, "", func(ts, nonce string) string { return EventSignature(ts, nonce, app.EncryptKey, body) })
}

// checkSigned verifies Lark's signature headers: the timestamp within the
// skew window, the signature (computed by sign) compared in constant time,
// then the nonce unseen — in that order, so forged requests cannot fill the
// nonce cache. scope separates nonce spaces (events, cards).
func (s *Server) checkSigned(ctx context.Context, app App, h http.Header, scope string, sign func(ts, nonce string) string) *rejection {
	ts, nonce, sig := h.Get(HeaderTimestamp), h.Get(HeaderNonce), h.Get(HeaderSignature)
	if ts == "" || nonce == "" || sig == "" {
		return &rejection{http.StatusUnauthorized, "missing_signature", "X-Lark-Request-Timestamp, X-Lark-Request-Nonce and X-Lark-Signature are required"}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return &rejection{http.StatusUnauthorized, "stale_timestamp", "X-Lark-Request-Timestamp is not Unix seconds"}
	}
	if d := s.cfg.Now().Sub(time.Unix(sec, 0)); d > s.cfg.ClockSkew || d < -s.cfg.ClockSkew {
		return &rejection{http.StatusUnauthorized, "stale_timestamp", "request timestamp is outside the accepted window"}
	}
	if !signatureOK(sig, sign(ts, nonce)) {
		return &rejection{http.StatusUnauthorized, "bad_signature", "signature does not match"}
	}
	seen, err := s.cfg.Replay.Seen(ctx, app.ID+":"+scope+nonce, 2*s.cfg.ClockSkew)
	if err != nil {
		// Without the replay store we cannot tell a replay: Lark retries.
		return &rejection{http.StatusServiceUnavailable, "replay_store_unavailable", "nonce store unavailable; retry later"}
	}
	if seen {
		return &rejection{http.StatusUnauthorized, "replayed_nonce", "nonce already used"}
	}
	return nil
}

// tokenOK compares in constant time; an empty expected token never matches.
func tokenOK(got, want string) bool {
	return want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}
