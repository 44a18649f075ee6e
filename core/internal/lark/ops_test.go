package lark

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// sentCard sends a card through c and returns its message ID.
func sentCard(t *testing.T, c *Client) string {
	t.Helper()
	s, err := c.Send(t.Context(), SendRequest{ReceiveIDType: ReceiveIDChatID, ReceiveID: "oc_cards", MsgType: "interactive",
		Content: `{"config":{"update_multi":true},"elements":[{"tag":"markdown","content":"v1"}]}`})
	if err != nil {
		t.Fatalf("sending a card: %v", err)
	}
	return s.MessageID
}

func TestClientUpdateCard(t *testing.T) {
	h := newHarness(t)
	c := h.client(t)
	id := sentCard(t, c)
	card := `{"config":{"update_multi":true},"elements":[{"tag":"markdown","content":"v2"}]}`
	if err := c.UpdateCard(t.Context(), UpdateCardRequest{MessageID: id, Card: card}); err != nil {
		t.Fatalf("UpdateCard: %v", err)
	}
	ups := h.emu.Updates()
	if len(ups) != 1 || ups[0].Kind != "patch" || ups[0].MessageID != id || ups[0].Card != card || ups[0].AppID != testAppID {
		t.Fatalf("updates %+v", ups)
	}
	// Lark refuses to patch a message that is not the app's card.
	err := c.UpdateCard(t.Context(), UpdateCardRequest{MessageID: "om_unknown", Card: card})
	var ae *APIError
	if !errors.As(err, &ae) || ae.Code != CodeBadParam || IsRetryable(err) {
		t.Fatalf("UpdateCard(unknown) = %v, want terminal 230001", err)
	}
}

func TestClientDelayedUpdateCard(t *testing.T) {
	h := newHarness(t)
	c := h.client(t)
	id := sentCard(t, c)
	tok := h.emu.IssueCardToken(id)
	card := `{"elements":[{"tag":"markdown","content":"done"}]}`
	for i := range 2 {
		if err := c.DelayedUpdateCard(t.Context(), DelayedCardUpdateRequest{Token: tok, Card: card, OpenIDs: []string{"ou_clicker"}}); err != nil {
			t.Fatalf("use %d: %v", i+1, err)
		}
	}
	ups := h.emu.Updates()
	if len(ups) != 2 || ups[0].Kind != "delayed" || ups[0].MessageID != id || ups[0].Token != tok ||
		fmt.Sprint(ups[0].OpenIDs) != "[ou_clicker]" || ups[0].Card != card {
		t.Fatalf("updates %+v", ups)
	}
	// A token works twice.
	err := c.DelayedUpdateCard(t.Context(), DelayedCardUpdateRequest{Token: tok, Card: card})
	var ae *APIError
	if !errors.As(err, &ae) || ae.Code != CodeBadParam || IsRetryable(err) {
		t.Fatalf("third use = %v, want terminal 230001", err)
	}
}

func TestClientReactions(t *testing.T) {
	h := newHarness(t)
	c := h.client(t)
	r, err := c.AddReaction(t.Context(), AddReactionRequest{MessageID: "om_user", EmojiType: "THUMBSUP"})
	if err != nil || r.ID == "" {
		t.Fatalf("AddReaction = %+v, %v", r, err)
	}
	if err := c.RemoveReaction(t.Context(), RemoveReactionRequest{MessageID: "om_user", ReactionID: r.ID}); err != nil {
		t.Fatalf("RemoveReaction: %v", err)
	}
	rs := h.emu.Reactions()
	if len(rs) != 1 || rs[0].ReactionID != r.ID || rs[0].EmojiType != "THUMBSUP" || !rs[0].Removed {
		t.Fatalf("reactions %+v", rs)
	}
	if err := c.RemoveReaction(t.Context(), RemoveReactionRequest{MessageID: "om_user", ReactionID: r.ID}); err == nil || IsRetryable(err) {
		t.Fatalf("second RemoveReaction = %v, want a terminal error", err)
	}
}

func TestClientRaw(t *testing.T) {
	h := newHarness(t)
	c := h.client(t)
	body, _ := json.Marshal(map[string]any{"receive_id": "oc_raw", "msg_type": "text", "content": text("raw")})
	resp, err := c.Raw(t.Context(), RawRequest{Method: http.MethodPost, Path: "/open-apis/im/v1/messages?receive_id_type=chat_id", Body: body})
	if err != nil || resp.HTTPStatus != 200 {
		t.Fatalf("Raw send = %+v, %v", resp, err)
	}
	var sent struct {
		Data struct {
			MessageID string `json:"message_id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(resp.Body, &sent); err != nil || sent.Data.MessageID == "" {
		t.Fatalf("raw body %s (%v)", resp.Body, err)
	}
	if _, err := c.Raw(t.Context(), RawRequest{Method: http.MethodDelete, Path: "/open-apis/im/v1/messages/" + sent.Data.MessageID}); err != nil {
		t.Fatalf("Raw delete: %v", err)
	}
	if msgs := h.emu.Messages(); len(msgs) != 1 || !msgs[0].Deleted {
		t.Fatalf("messages %+v, want one deleted", msgs)
	}
	// A code in a raw answer is an APIError like any other.
	_, err = c.Raw(t.Context(), RawRequest{Method: http.MethodDelete, Path: "/open-apis/im/v1/messages/" + sent.Data.MessageID})
	var ae *APIError
	if !errors.As(err, &ae) || ae.Code != 230011 {
		t.Fatalf("deleting twice = %v, want 230011", err)
	}
	// An unknown route is an APIError with its status, whether the answer
	// is JSON (the emulator's) or plain text (docs/lark-facts.md#unknown-routes).
	_, err = c.Raw(t.Context(), RawRequest{Method: http.MethodGet, Path: "/open-apis/nope/v1/x"})
	if !errors.As(err, &ae) || ae.HTTPStatus != 404 {
		t.Fatalf("unknown path = %v, want an APIError with HTTP 404", err)
	}
}

func TestRequestValidation(t *testing.T) {
	card := `{"elements":[]}`
	tests := map[string]struct {
		req      interface{ Validate() error }
		tooLarge bool // else just invalid; nil error when ok
		ok       bool
	}{
		"update ok":                 {req: UpdateCardRequest{MessageID: "om_1", Card: card}, ok: true},
		"update without message":    {req: UpdateCardRequest{Card: card}},
		"update card not an object": {req: UpdateCardRequest{MessageID: "om_1", Card: `["x"]`}},
		"update card over 30 KB": {req: UpdateCardRequest{MessageID: "om_1",
			Card: fmt.Sprintf(`{"elements":[{"tag":"markdown","content":%q}]}`, strings.Repeat("a", 30<<10))}, tooLarge: true},
		"delayed ok":                {req: DelayedCardUpdateRequest{Token: "c-1", Card: card, OpenIDs: []string{"ou_1"}}, ok: true},
		"delayed without token":     {req: DelayedCardUpdateRequest{Card: card}},
		"delayed card not JSON":     {req: DelayedCardUpdateRequest{Token: "c-1", Card: "{"}},
		"delayed card over 30 KB":   {req: DelayedCardUpdateRequest{Token: "c-1", Card: fmt.Sprintf(`{"x":%q}`, strings.Repeat("a", 30<<10))}, tooLarge: true},
		"reaction ok":               {req: AddReactionRequest{MessageID: "om_1", EmojiType: "SMILE"}, ok: true},
		"reaction without emoji":    {req: AddReactionRequest{MessageID: "om_1"}},
		"reaction without message":  {req: AddReactionRequest{EmojiType: "SMILE"}},
		"remove ok":                 {req: RemoveReactionRequest{MessageID: "om_1", ReactionID: "r"}, ok: true},
		"remove without reaction":   {req: RemoveReactionRequest{MessageID: "om_1"}},
		"raw ok":                    {req: RawRequest{Method: "GET", Path: "/open-apis/contact/v3/users/ou_1?user_id_type=open_id"}, ok: true},
		"raw post with body":        {req: RawRequest{Method: "POST", Path: "/open-apis/im/v1/pins", Body: []byte(`{"message_id":"om_1"}`)}, ok: true},
		"raw unknown method":        {req: RawRequest{Method: "TRACE", Path: "/open-apis/x"}},
		"raw outside open-apis":     {req: RawRequest{Method: "GET", Path: "/admin"}},
		"raw absolute URL":          {req: RawRequest{Method: "GET", Path: "https://evil.example/open-apis/x"}},
		"raw auth endpoint":         {req: RawRequest{Method: "POST", Path: "/open-apis/auth/v3/tenant_access_token/internal"}},
		"raw dot-dot":               {req: RawRequest{Method: "GET", Path: "/open-apis/../_emu/reset"}},
		"raw path parameter syntax": {req: RawRequest{Method: "GET", Path: "/open-apis/im/v1/messages/:message_id"}},
		"raw body not JSON":         {req: RawRequest{Method: "POST", Path: "/open-apis/x", Body: []byte("x=1")}},
		"raw body over 1 MiB":       {req: RawRequest{Method: "POST", Path: "/open-apis/x", Body: []byte(`"` + strings.Repeat("a", 1<<20) + `"`)}, tooLarge: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := tc.req.Validate()
			if tc.ok {
				if err != nil {
					t.Fatalf("Validate() = %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidRequest) || IsRetryable(err) || errors.Is(err, ErrContentTooLarge) != tc.tooLarge {
				t.Fatalf("Validate() = %v, want ErrInvalidRequest (too large: %v)", err, tc.tooLarge)
			}
		})
	}
}

// TestSizeLimitMatchesLark finds the largest text and card the client
// accepts and checks that the emulator (Lark's documented limits) accepts
// it too, and that one byte more is refused by both.
func TestSizeLimitMatchesLark(t *testing.T) {
	h := newHarness(t)
	c := h.client(t)
	for _, msgType := range []string{"text", "interactive"} {
		t.Run(msgType, func(t *testing.T) {
			content := func(n int) string {
				if msgType == "text" {
					return text(strings.Repeat("a", n))
				}
				return fmt.Sprintf(`{"elements":[{"tag":"markdown","content":%q}]}`, strings.Repeat("a", n))
			}
			req := func(n int) SendRequest {
				return SendRequest{ReceiveIDType: ReceiveIDChatID, ReceiveID: "oc_size", MsgType: msgType, Content: content(n)}
			}
			lo, hi := 0, 200<<10 // Validate(lo) passes, Validate(hi) fails
			for hi-lo > 1 {
				mid := (lo + hi) / 2
				if req(mid).Validate() == nil {
					lo = mid
				} else {
					hi = mid
				}
			}
			if _, err := c.Send(t.Context(), req(lo)); err != nil {
				t.Fatalf("largest accepted %s (%d chars) refused by Lark: %v", msgType, lo, err)
			}
			if err := req(hi).Validate(); !errors.Is(err, ErrContentTooLarge) {
				t.Fatalf("one more char: %v", err)
			}
			// Bypass the client's check: Lark refuses it with 230025.
			body, _ := json.Marshal(req(hi).body())
			_, err := c.Raw(t.Context(), RawRequest{Method: "POST", Path: "/open-apis/im/v1/messages?receive_id_type=chat_id", Body: body})
			var ae *APIError
			if !errors.As(err, &ae) || ae.Code != CodeContentTooLong {
				t.Fatalf("one char over through Raw = %v, want 230025", err)
			}
		})
	}
}

func TestClientWarmToken(t *testing.T) {
	h := newHarness(t)
	c := h.client(t)
	if err := c.WarmToken(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := h.emu.TokenFetches(); got != 1 {
		t.Fatalf("%d token fetches after WarmToken, want 1", got)
	}
	if _, err := c.Send(t.Context(), SendRequest{ReceiveIDType: ReceiveIDChatID, ReceiveID: "oc_1", MsgType: "text", Content: text("x")}); err != nil {
		t.Fatal(err)
	}
	if got := h.emu.TokenFetches(); got != 1 {
		t.Fatalf("%d token fetches after a send, want still 1", got)
	}
	_ = c.Close(t.Context())
	if err := c.WarmToken(t.Context()); !errors.Is(err, ErrClosed) {
		t.Fatalf("WarmToken after Close = %v", err)
	}
}
