package ingest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/larkway/larkway/core/internal/callback"
	"github.com/larkway/larkway/core/internal/envelope"
	"github.com/larkway/larkway/core/internal/telemetry"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// cardCallback publishes a card click and answers Lark with the plugin's
// toast or card if it arrives within the budget, else {} at once (the
// dispatcher then applies a late card through the delayed-update API).
func (s *Server) cardCallback(ctx context.Context, w http.ResponseWriter, app App, ev *pluginv1.Event, legacy bool) {
	waiter := s.registerCard(ctx, app.ID, ev)
	if waiter != nil {
		defer waiter.Close()
	}
	if !s.publish(ctx, w, app, ev, false, nil, nil) {
		return
	}
	resp := s.awaitCard(ctx, waiter)
	outcome := "card_answered"
	if resp == nil {
		outcome = "card_deferred"
	}
	s.metrics.requests.WithLabelValues(app.ID, outcome, "200").Inc()
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(CardResponseBody(resp, legacy))
}

// registerCard marks ev as awaiting a response and registers its waiter
// (nil if the response channel is down: the click still reaches the plugin,
// Lark just gets no toast).
func (s *Server) registerCard(ctx context.Context, appID string, ev *pluginv1.Event) callback.Waiter {
	ev.GetCardAction().AwaitsResponse = true
	waiter, err := s.cfg.Callbacks.Register(ctx, ev.GetEventId())
	if err != nil {
		s.logger.Warn("card response channel unavailable", "app", appID, "err", err)
		return nil
	}
	return waiter
}

func (s *Server) awaitCard(ctx context.Context, waiter callback.Waiter) *pluginv1.CardResponse {
	if waiter == nil {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, s.cfg.CardBudget)
	defer cancel()
	resp, _ := waiter.Wait(wctx)
	return resp
}

// Respond is the long connection's path for a card click: publish it,
// wait for the plugin's answer within the budget, and return the JSON for
// the frame's ack ({} when none came). An error means the click was not
// stored, and the frame must be acked 500 so Lark redelivers it.
func (s *Server) Respond(ctx context.Context, ev *pluginv1.Event) ([]byte, error) {
	waiter := s.registerCard(ctx, ev.GetAppId(), ev)
	if waiter != nil {
		defer waiter.Close()
	}
	msg, err := envelope.Encode(ev)
	if err != nil {
		return nil, err
	}
	if s.tracing {
		msg.Properties = telemetry.Inject(ctx, msg.Properties)
	}
	pctx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
	err = s.pub.Publish(pctx, envelope.Topic(ev.GetAppId()), msg)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("storing card callback %s: %w", ev.GetEventId(), err)
	}
	return CardResponseBody(s.awaitCard(ctx, waiter), false), nil
}

// CardResponseBody renders a plugin's card response as Lark expects it. For
// 2.0 callbacks: {"toast": {...}, "card": {"type": "raw", "data": CARD}}; for
// legacy callbacks the new card JSON itself. Nothing to show: {}.
func CardResponseBody(resp *pluginv1.CardResponse, legacy bool) []byte {
	if resp == nil {
		return []byte("{}")
	}
	card := resp.GetCardJson()
	if legacy {
		if card != "" && json.Valid([]byte(card)) {
			return []byte(card)
		}
		return []byte("{}")
	}
	out := map[string]any{}
	if t := resp.GetToast(); t.GetContent() != "" {
		toast := map[string]any{"type": toastType(t.GetType()), "content": t.GetContent()}
		if len(t.GetI18N()) > 0 {
			toast["i18n"] = t.GetI18N()
		}
		out["toast"] = toast
	}
	if card != "" && json.Valid([]byte(card)) {
		out["card"] = map[string]any{"type": "raw", "data": json.RawMessage(card)}
	}
	b, _ := json.Marshal(out)
	return b
}

func toastType(t pluginv1.ToastType) string {
	switch t {
	case pluginv1.ToastType_TOAST_TYPE_SUCCESS:
		return "success"
	case pluginv1.ToastType_TOAST_TYPE_WARNING:
		return "warning"
	case pluginv1.ToastType_TOAST_TYPE_ERROR:
		return "error"
	}
	return "info"
}

// legacyCardHandler serves the card request URL (card.action.trigger_v1),
// which exists only if the app configures it. Its body carries the
// delayed-update token in "token", not the verification token, so a click
// is authenticated only by the SHA-1 signature over timestamp + nonce +
// verification token + raw body, with the replay window and nonce cache.
// That signature is checked on the raw bytes before anything is decrypted
// or parsed. The only request that may come unsigned is url_verification,
// which carries the verification token; an unsigned request that is not
// exactly that gets the uniform unauthenticated answer, whatever failed.
func (s *Server) legacyCardHandler(st *appState) http.Handler {
	app := st.App
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := s.readBody(w, r, app, nil)
		if !ok {
			return
		}
		if header(r.Header, HeaderSignature) == "" {
			challenge, rej := legacyCardChallenge(st, body)
			if rej != nil {
				s.refuse(w, st, rej)
				return
			}
			st.challenged.Inc()
			writeJSON(w, http.StatusOK, map[string]string{"challenge": challenge})
			return
		}
		if rej := s.checkCardSignature(r.Context(), st, r.Header, body); rej != nil {
			s.refuse(w, st, rej)
			return
		}
		// Authenticated: from here on, answers may say what went wrong.
		plain, rej := openLegacyCard(st, body)
		if rej != nil {
			s.refuse(w, st, rej)
			return
		}
		var probe envelope.Probe
		if err := json.Unmarshal(plain, &probe); err != nil {
			s.reject(w, app.ID, http.StatusBadRequest, "not_json", "decrypted body is not a JSON object")
			return
		}
		if probe.IsChallenge() {
			if !tokenOK(probe.Token, app.VerificationToken) {
				s.reject(w, app.ID, http.StatusUnauthorized, "bad_token", "verification token does not match")
				return
			}
			st.challenged.Inc()
			writeJSON(w, http.StatusOK, map[string]string{"challenge": probe.Challenge})
			return
		}
		ev, err := envelope.NormalizeLegacyCard(app.ID, plain)
		if err != nil {
			s.reject(w, app.ID, http.StatusBadRequest, "malformed", err.Error())
			return
		}
		s.cardCallback(r.Context(), w, app, ev, true)
	})
}

// openLegacyCard is a signed card body's plaintext: decrypted if it is the
// encrypted wrapper, else the body itself.
func openLegacyCard(st *appState, body []byte) ([]byte, *rejection) {
	var outer envelope.Probe
	if err := json.Unmarshal(body, &outer); err != nil {
		return nil, &rejection{http.StatusBadRequest, "not_json", "body is not a JSON object", ""}
	}
	if outer.Encrypt == "" {
		return body, nil
	}
	if st.block == nil {
		return nil, &rejection{http.StatusBadRequest, "undecryptable", "encrypted body, but this app has no encrypt key configured", ""}
	}
	plain, err := decrypt(make([]byte, base64.StdEncoding.DecodedLen(len(outer.Encrypt))), []byte(outer.Encrypt), st.block)
	if err != nil {
		return nil, &rejection{http.StatusBadRequest, "undecryptable", "body could not be decrypted with this app's encrypt key", ""}
	}
	return plain, nil
}

// legacyCardChallenge is the challenge to echo if the unsigned body is a
// url_verification (encrypted when the app has an Encrypt Key, as Lark
// then sends it) carrying the verification token; any failure is the
// uniform unauthenticated rejection.
func legacyCardChallenge(st *appState, body []byte) (string, *rejection) {
	var outer envelope.Probe
	if err := json.Unmarshal(body, &outer); err != nil {
		return "", unauthenticated("unsigned card body is not a JSON object")
	}
	plain := body
	if outer.Encrypt != "" {
		if st.block == nil {
			return "", unauthenticated("unsigned card body is encrypted, but this app has no encrypt key configured")
		}
		var err error
		if plain, err = decrypt(make([]byte, base64.StdEncoding.DecodedLen(len(outer.Encrypt))), []byte(outer.Encrypt), st.block); err != nil {
			return "", unauthenticated("unsigned card body could not be decrypted")
		}
	}
	var probe envelope.Probe
	if err := json.Unmarshal(plain, &probe); err != nil {
		return "", unauthenticated("unsigned decrypted card body is not a JSON object")
	}
	if !probe.IsChallenge() {
		return "", unauthenticated("unsigned card body is not url_verification")
	}
	if !tokenOK(probe.Token, st.VerificationToken) {
		return "", unauthenticated("verification token does not match")
	}
	return probe.Challenge, nil
}

func (s *Server) checkCardSignature(ctx context.Context, app *appState, h http.Header, body []byte) *rejection {
	return s.checkSigned(ctx, h, app.cardNonceScope, func(dst []byte, ts, nonce string) []byte {
		return append(dst, CardSignature(ts, nonce, app.VerificationToken, body)...)
	})
}
