// Package ingest receives Lark's events over HTTPS webhooks, authenticates
// and normalizes them, and acknowledges Lark only after the bus has durably
// stored the event: a 200 always means "stored", and anything not stored gets
// a 5xx so Lark retries (15 s, 5 min, 1 h, 6 h).
package ingest

import (
	"context"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
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
	// MaxInFlight bounds the event requests read, verified, decrypted and
	// encoded at once (default GOMAXPROCS); see admission.go.
	MaxInFlight int
	// AdmissionWait bounds how long an event request waits for the bus to
	// have room and for a slot before it gets a 503 (default 500 ms).
	AdmissionWait time.Duration
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
	exact   map[string]http.Handler // the apps' paths
	tracing bool                    // a tracer was configured
	metrics *metrics

	admitter bus.Admitter  // nil: the bus has no bound to ask about
	slots    chan struct{} // ingest slots taken (see admission.go)
}

// appState is an App with what its requests need precomputed, so the hot
// path neither derives keys nor hashes metric labels per request.
type appState struct {
	App
	block           cipher.Block // nil without an Encrypt Key
	eventNonceScope string       // replay-cache key prefixes
	cardNonceScope  string
	stored          prometheus.Counter
	challenged      prometheus.Counter
	// The overload refusal's rejections_total and requests_total series.
	overloaded, overloadedReq prometheus.Counter
	// The uniform rejection's rejections_total and requests_total series.
	unauthenticated, unauthenticatedReq prometheus.Counter
	spanOpts                            []trace.SpanStartOption
}

func (s *Server) newAppState(a App) *appState {
	st := &appState{App: a, eventNonceScope: a.ID + ":", cardNonceScope: a.ID + ":card:",
		stored:             s.metrics.requests.WithLabelValues(a.ID, "stored", "200"),
		challenged:         s.metrics.requests.WithLabelValues(a.ID, "challenge", "200"),
		overloaded:         s.metrics.rejected.WithLabelValues(a.ID, reasonOverloaded),
		overloadedReq:      s.metrics.requests.WithLabelValues(a.ID, "rejected", strconv.Itoa(http.StatusServiceUnavailable)),
		unauthenticated:    s.metrics.rejected.WithLabelValues(a.ID, reasonUnauthenticated),
		unauthenticatedReq: s.metrics.requests.WithLabelValues(a.ID, "rejected", strconv.Itoa(http.StatusUnauthorized)),
		spanOpts: []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("larkway.app", a.ID))},
	}
	if a.EncryptKey != "" {
		st.block = newCipher(a.EncryptKey)
	}
	return st
}

type metrics struct {
	requests  *prometheus.CounterVec
	rejected  *prometheus.CounterVec
	published prometheus.Histogram
	waiting   prometheus.Gauge
}

// New builds the handler; it does no I/O. reg receives the ingest metrics.
func New(cfg Config, pub bus.Publisher, logger *slog.Logger, reg prometheus.Registerer) *Server {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "larkway_ingest_requests_total", Help: "Webhook requests by app, outcome and HTTP status.",
		}, []string{"app_id", "outcome", "status"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "larkway_ingest_rejections_total", Help: "Rejected webhook requests by app and reason.",
		}, []string{"app_id", "reason"}),
		published: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "larkway_ingest_publish_duration_seconds", Help: "Time for the bus to durably accept an event.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		waiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "larkway_ingest_admission_waiting", Help: "Webhook requests waiting for the bus to have room or for an ingest slot.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.rejected, m.published, m.waiting)
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
	tracing := cfg.Tracer != nil
	if !tracing {
		cfg.Tracer = noop.NewTracerProvider().Tracer("")
	}
	if cfg.CardBudget <= 0 {
		cfg.CardBudget = 2 * time.Second
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = runtime.GOMAXPROCS(0)
	}
	if cfg.AdmissionWait <= 0 {
		cfg.AdmissionWait = 500 * time.Millisecond
	}
	s := &Server{cfg: cfg, pub: pub, logger: logger.With("component", "ingest"), mux: http.NewServeMux(), metrics: m,
		tracing: tracing, exact: map[string]http.Handler{}, slots: make(chan struct{}, cfg.MaxInFlight)}
	s.admitter, _ = pub.(bus.Admitter)
	for _, a := range cfg.Apps {
		st := s.newAppState(a)
		s.handle(a.EventPath, s.eventHandler(st))
		if a.CardPath != "" {
			s.handle(a.CardPath, s.legacyCardHandler(st))
		}
	}
	return s
}

func (s *Server) handle(path string, h http.Handler) {
	s.mux.Handle(path, h)
	s.exact[path] = h
}

// ServeHTTP routes by app path; unknown paths get 404 with a JSON body.
// The configured paths are looked up directly first: ServeMux's matching
// was a measurable share of a webhook's cost. Anything else goes through
// the mux, as before (cleaned-path redirects, 404).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h := s.exact[r.URL.Path]; h != nil {
		h.ServeHTTP(w, r)
		return
	}
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

// successBody is what writeJSON writes for {"msg":"success"}, precomputed
// for the path every stored event takes.
var successBody = []byte(`{"msg":"success"}` + "\n")

// jsonContentType is shared by the success responses rather than built
// per request by Header.Set; net/http only reads it.
var jsonContentType = []string{"application/json; charset=utf-8"}

func writeSuccess(w http.ResponseWriter) {
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(successBody)
}

// readBody enforces POST and the body limit, reading into buf (grown as
// needed; Content-Length sizes it up front); on failure it has answered.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, app App, buf []byte) ([]byte, bool) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		s.reject(w, app.ID, http.StatusMethodNotAllowed, "method", "use POST")
		return buf, false
	}
	if n := r.ContentLength; n >= 0 && n < s.cfg.MaxBodyBytes && int(n) >= cap(buf) {
		// One spare byte so the read that sees EOF needs no growth.
		buf = make([]byte, 0, n+1)
	}
	body, err := readAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes), buf[:0])
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.reject(w, app.ID, http.StatusRequestEntityTooLarge, "oversize", fmt.Sprintf("body exceeds %d bytes", s.cfg.MaxBodyBytes))
			return body, false
		}
		s.reject(w, app.ID, http.StatusBadRequest, "read", "reading body failed")
		return body, false
	}
	return body, true
}

// readAll is io.ReadAll appending to b, so a pooled buffer can be reused.
func readAll(r io.Reader, b []byte) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return b, err
		}
	}
}

func (s *Server) eventHandler(app *appState) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The traced ctx is passed down rather than put in a copy of r.
		// Without tracing configured no span is started at all.
		ctx, span := r.Context(), telemetry.NoSpan
		if s.tracing {
			ctx, span = s.cfg.Tracer.Start(ctx, "ingest.webhook", app.spanOpts...)
			defer span.End()
		}
		if !s.admit(ctx) {
			s.overloaded(w, app)
			return
		}
		slot := true
		defer func() {
			if slot {
				s.release()
			}
		}()
		rb := getBuf()
		retained := false // the Event, whose RawJson is rb's bytes, outlives the handler
		defer func() {
			if !retained {
				putBuf(rb)
			}
		}()
		var ok bool
		if rb.body, ok = s.readBody(w, r, app.App, rb.body); !ok {
			return
		}
		body, rej := s.authenticate(ctx, app, r.Header, rb.body, rb)
		if body != nil {
			// The Event built from body shares none of its memory.
			defer body.Release()
		}
		if rej != nil {
			s.refuse(w, app, rej)
			return
		}
		if body.IsChallenge() {
			app.challenged.Inc()
			writeJSON(w, http.StatusOK, map[string]string{"challenge": body.Challenge()})
			return
		}
		ev, err := body.Event()
		if err != nil {
			reason := "malformed"
			if errors.Is(err, envelope.ErrUnknownSchema) {
				reason = "unknown_schema"
			}
			s.reject(w, app.ID, http.StatusBadRequest, reason, err.Error())
			return
		}
		if span.IsRecording() {
			span.SetAttributes(attribute.String("larkway.event_type", ev.GetEventType()), attribute.String("larkway.event_id", ev.GetEventId()))
		}
		if ev.GetCardAction() != nil {
			// Held while the plugin answers: the buffers are left to the GC.
			retained = true
			slot = false
			s.release()
			s.cardCallback(ctx, w, app.App, ev, false)
			return
		}
		// publish encodes ev (copying RawJson) before it returns, and
		// nothing keeps ev after it: the buffers go back to the pool. ev
		// is body's normalized form, so it is stored as the body alone.
		if !s.publish(ctx, w, app.App, ev, true, &rb.enc, func() { slot = false; s.release() }) {
			return
		}
		app.stored.Inc()
		writeSuccess(w)
	})
}

// publish stores ev durably; on failure it has answered 503 (Lark retries).
//
// normalized says ev is what envelope.Normalize made of its RawJson for
// app: then only the JSON is stored (envelope.EncodeRaw), and the
// dispatcher normalizes it again.
//
// enc, if not nil, is a reusable buffer for the encoded event: it is kept
// only when the publish succeeded (see bus.Publisher). encoded, if not nil,
// is called once the event is encoded, before the wait for the bus.
//
// A bus found full after admission is waited on (Room) within the publish
// timeout: the event is verified already, and refusing it would waste that.
func (s *Server) publish(ctx context.Context, w http.ResponseWriter, app App, ev *pluginv1.Event, normalized bool, enc *[]byte, encoded func()) bool {
	var buf []byte
	if enc != nil {
		buf, *enc = *enc, nil
	}
	var (
		msg bus.Message
		err error
	)
	if normalized {
		msg = envelope.EncodeRaw(buf, app.ID, ev.GetRawJson(), ev)
	} else {
		msg, err = envelope.EncodeTo(buf, ev)
	}
	if encoded != nil {
		encoded()
	}
	if err != nil {
		s.reject(w, app.ID, http.StatusInternalServerError, "encode", "encoding event failed")
		return false
	}
	if s.tracing {
		msg.Properties = telemetry.Inject(ctx, msg.Properties)
	}
	pctx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
	defer cancel()
	start := time.Now()
	if err := s.publishWhenRoom(pctx, envelope.Topic(app.ID), msg); err != nil {
		s.logger.Warn("event not stored; Lark will retry", "app", app.ID, "event_id", ev.GetEventId(), "err", err)
		s.reject(w, app.ID, http.StatusServiceUnavailable, "bus_unavailable", "event could not be stored; retry later")
		return false
	}
	s.metrics.published.Observe(time.Since(start).Seconds())
	if enc != nil {
		*enc = msg.Payload
	}
	return true
}

// publishWhenRoom publishes msg, waiting for room (bus.Admitter) and
// trying again while the bus is at its bound, until ctx ends.
func (s *Server) publishWhenRoom(ctx context.Context, topic string, msg bus.Message) error {
	for {
		err := s.pub.Publish(ctx, topic, msg)
		if err == nil || s.admitter == nil || !errors.Is(err, bus.ErrFull) {
			return err
		}
		if room := s.admitter.Room(); room != nil {
			select {
			case <-room:
			case <-ctx.Done():
				return err
			}
		}
	}
}

// rejection is an authentication failure's answer.
type rejection struct {
	status int
	reason string
	msg    string
	// cause is what went wrong inside an unauthenticated rejection: it is
	// logged at debug level only, never answered.
	cause string
}

// reasonUnauthenticated labels the one answer every request gets that no
// signature authenticates and that fails before its verification token has
// been checked (see unauthenticated).
const reasonUnauthenticated = "unauthenticated"

// unauthenticatedBody is that answer's whole body: precomputed, so it is
// byte for byte the same whatever failed.
var unauthenticatedBody = func() []byte {
	b, _ := json.Marshal(errorBody{Error: "request could not be authenticated", Reason: reasonUnauthenticated})
	return append(b, '\n')
}()

// unauthenticated is the rejection of a request that arrived unsigned (the
// url_verification challenge, an app without an Encrypt Key, the legacy card
// URL's challenge) and failed anywhere before it proved the verification
// token: bad base64 or padding, JSON, the wrong type, the wrong token. Each
// of those answered differently once, which made the webhook a CBC padding
// oracle: the status, body, headers and metric label must not tell them apart.
func unauthenticated(cause string) *rejection {
	return &rejection{status: http.StatusUnauthorized, reason: reasonUnauthenticated, cause: cause}
}

// refuse answers rej: the uniform answer for unauthenticated ones, else
// rej's own status and reason.
func (s *Server) refuse(w http.ResponseWriter, app *appState, rej *rejection) {
	if rej.reason != reasonUnauthenticated {
		s.reject(w, app.ID, rej.status, rej.reason, rej.msg)
		return
	}
	s.logger.Debug("unauthenticated request refused", "app", app.ID, "cause", rej.cause)
	app.unauthenticated.Inc()
	app.unauthenticatedReq.Inc()
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = w.Write(unauthenticatedBody)
}

// authenticate returns the decoded plaintext body, or why not.
//
// With an Encrypt Key, Lark signs every request but the url_verification
// challenge. A signed request (X-Lark-Signature present) is authenticated on
// its raw bytes first — timestamp within the skew window, SHA-256 signature
// in constant time, nonce unseen, in that order so forged requests cannot
// fill the nonce cache — and only then decrypted, parsed and its token
// checked; those later failures may say what went wrong, as only a holder
// of the Encrypt Key can reach them. A request without X-Lark-Signature can
// only be the challenge, and any failure of it is unauthenticated(…).
//
// Without an Encrypt Key nothing is signed or encrypted: the verification
// token in the plaintext is the only proof, and every failure before it is
// unauthenticated(…) too.
//
// The plaintext is decrypted into rb.plain.
func (s *Server) authenticate(ctx context.Context, app *appState, h http.Header, raw []byte, rb *reqBuf) (*envelope.Body, *rejection) {
	if app.block == nil {
		body, err := envelope.Parse(app.ID, raw)
		if err != nil {
			return nil, unauthenticated("body is not a JSON object")
		}
		if body.Encrypted() != "" {
			return body, unauthenticated("encrypted body, but this app has no encrypt key configured")
		}
		if !tokenOK(body.VerificationToken(), app.VerificationToken) {
			return body, unauthenticated("verification token does not match")
		}
		return body, nil
	}
	if header(h, HeaderSignature) == "" {
		return authenticateChallenge(app, raw, rb)
	}
	if rej := s.checkSigned(ctx, h, app.eventNonceScope, func(dst []byte, ts, nonce string) []byte {
		dst, rb.scratch = appendEventSignature(dst, rb.scratch, ts, nonce, app.EncryptKey, raw)
		return dst
	}); rej != nil {
		return nil, rej
	}
	enc, err := wrapped(raw)
	if err != nil {
		return nil, &rejection{http.StatusBadRequest, "not_json", "body is not a JSON object", ""}
	}
	if len(enc) == 0 {
		return nil, &rejection{http.StatusBadRequest, "not_encrypted", "this app has an encrypt key: Lark sends encrypted bodies", ""}
	}
	plain, err := open(app, enc, rb)
	if err != nil {
		return nil, &rejection{http.StatusBadRequest, "undecryptable", "body could not be decrypted with this app's encrypt key", ""}
	}
	body, err := envelope.Parse(app.ID, plain)
	if err != nil {
		return nil, &rejection{http.StatusBadRequest, "not_json", "decrypted body is not a JSON object", ""}
	}
	return body, checkToken(body, app)
}

// authenticateChallenge accepts an unsigned body on an app with an Encrypt
// Key only if it decrypts to a url_verification carrying the verification
// token; whatever fails, the rejection is the same.
func authenticateChallenge(app *appState, raw []byte, rb *reqBuf) (*envelope.Body, *rejection) {
	enc, err := wrapped(raw)
	if err != nil || len(enc) == 0 {
		return nil, unauthenticated("unsigned body is not Lark's encrypted wrapper")
	}
	plain, err := open(app, enc, rb)
	if err != nil {
		return nil, unauthenticated("unsigned body could not be decrypted")
	}
	body, err := envelope.Parse(app.ID, plain)
	if err != nil {
		return nil, unauthenticated("unsigned decrypted body is not a JSON object")
	}
	if !body.IsChallenge() {
		return body, unauthenticated("unsigned body is not url_verification")
	}
	if !tokenOK(body.VerificationToken(), app.VerificationToken) {
		return body, unauthenticated("verification token does not match")
	}
	return body, nil
}

// wrapped is the "encrypt" field of raw ("" if absent): read without a JSON
// decode when raw is exactly Lark's wrapper.
func wrapped(raw []byte) ([]byte, error) {
	if enc, ok := encryptField(raw); ok {
		return enc, nil
	}
	var outer envelope.Probe
	if err := json.Unmarshal(raw, &outer); err != nil {
		return nil, err
	}
	return []byte(outer.Encrypt), nil
}

// open decrypts enc with app's key into rb.plain (grown as needed).
func open(app *appState, enc []byte, rb *reqBuf) ([]byte, error) {
	if n := base64.StdEncoding.DecodedLen(len(enc)); cap(rb.plain) < n {
		rb.plain = make([]byte, n)
	}
	return decrypt(rb.plain[:cap(rb.plain)], enc, app.block)
}

func checkToken(body *envelope.Body, app *appState) *rejection {
	if !tokenOK(body.VerificationToken(), app.VerificationToken) {
		return &rejection{http.StatusUnauthorized, "bad_token", "verification token does not match", ""}
	}
	return nil
}

// checkSigned verifies Lark's signature headers: the timestamp within the
// skew window, the signature (appended to its dst by sign) compared in
// constant time, then the nonce unseen — in that order, so forged requests
// cannot fill the nonce cache. scope prefixes the nonce (app, and events
// or cards). It reads only the headers and the raw body, so its answers
// depend on nothing a decryption would reveal.
func (s *Server) checkSigned(ctx context.Context, h http.Header, scope string, sign func(dst []byte, ts, nonce string) []byte) *rejection {
	ts, nonce, sig := header(h, HeaderTimestamp), header(h, HeaderNonce), header(h, HeaderSignature)
	if ts == "" || nonce == "" || sig == "" {
		return &rejection{http.StatusUnauthorized, "missing_signature", "X-Lark-Request-Timestamp, X-Lark-Request-Nonce and X-Lark-Signature are required", ""}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return &rejection{http.StatusUnauthorized, "stale_timestamp", "X-Lark-Request-Timestamp is not Unix seconds", ""}
	}
	if d := s.cfg.Now().Sub(time.Unix(sec, 0)); d > s.cfg.ClockSkew || d < -s.cfg.ClockSkew {
		return &rejection{http.StatusUnauthorized, "stale_timestamp", "request timestamp is outside the accepted window", ""}
	}
	var want [64]byte
	if !signatureMatches(sig, sign(want[:0], ts, nonce)) {
		return &rejection{http.StatusUnauthorized, "bad_signature", "signature does not match", ""}
	}
	seen, err := s.cfg.Replay.Seen(ctx, scope+nonce, 2*s.cfg.ClockSkew)
	if err != nil {
		// Without the replay store we cannot tell a replay: Lark retries.
		return &rejection{http.StatusServiceUnavailable, "replay_store_unavailable", "nonce store unavailable; retry later", ""}
	}
	if seen {
		return &rejection{http.StatusUnauthorized, "replayed_nonce", "nonce already used", ""}
	}
	return nil
}

// header is h.Get for a key already in canonical form (the Header*
// constants): net/http canonicalizes the keys it stores, and Get's
// re-canonicalizing of the key showed in profiles.
func header(h http.Header, canonicalKey string) string {
	if v := h[canonicalKey]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// tokenOK compares in constant time; an empty expected token never matches.
func tokenOK(got, want string) bool {
	return want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}
