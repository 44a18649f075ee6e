package lark

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"

	larkim "github.com/larksuite/oapi-sdk-go/v3/service/im/v1"
)

// Receive ID types accepted by Send (SendRequest.ReceiveIDType).
const (
	ReceiveIDOpenID  = "open_id"
	ReceiveIDUserID  = "user_id"
	ReceiveIDUnionID = "union_id"
	ReceiveIDEmail   = "email"
	ReceiveIDChatID  = "chat_id"
)

// Request body limits Lark enforces on messages (docs/lark-facts.md#messages):
// text 150 KB, cards and posts 30 KB, counted on the whole JSON request body.
// The Client checks them before sending, so an over-size message fails with
// a clear ErrContentTooLarge instead of Lark's 230025.
const (
	MaxTextBody = 150 << 10
	MaxCardBody = 30 << 10
	// maxRawBody bounds a raw call's body.
	maxRawBody = 1 << 20
)

// ReplyRequest replies to a message (POST /open-apis/im/v1/messages/:message_id/reply).
type ReplyRequest struct {
	// MessageID is the message replied to (om_…).
	MessageID string
	// MsgType is text, post, interactive, image, … (docs/lark-facts.md#messages).
	MsgType string
	// Content is the message content as a JSON-encoded string, e.g.
	// `{"text":"hi"}`; it is sent as a string, not an object.
	Content string
	// ReplyInThread replies in the message's thread (creating one).
	ReplyInThread bool
	// UUID makes the call idempotent for one hour: Lark executes a request
	// with a given uuid at most once. At most 50 characters; optional.
	UUID string
}

// SendRequest sends a message (POST /open-apis/im/v1/messages?receive_id_type=…).
type SendRequest struct {
	// ReceiveIDType is one of the ReceiveID* constants.
	ReceiveIDType string
	// ReceiveID is the chat (oc_…) or user ID, of ReceiveIDType.
	ReceiveID string
	// MsgType and Content are as for ReplyRequest.
	MsgType string
	Content string
	// UUID is as for ReplyRequest.
	UUID string
}

// Sent identifies the message Lark created. A retry with the same UUID
// returns the same Sent.
type Sent struct {
	MessageID string
	ChatID    string
	// ThreadID is set for messages in a thread.
	ThreadID string
}

// UpdateCardRequest replaces a shared card's content (PATCH
// /open-apis/im/v1/messages/:message_id). Lark requires "update_multi": true
// in the card's config before and after the update, and allows 5 updates
// per second per message.
type UpdateCardRequest struct {
	// MessageID is the card message (om_…), sent by this app.
	MessageID string
	// Card is the new card JSON object.
	Card string
}

// DelayedCardUpdateRequest updates a card after a card callback (POST
// /open-apis/interactive/v1/card/update). The token comes from the callback,
// is valid for 30 minutes and can be used twice.
type DelayedCardUpdateRequest struct {
	// Token is the callback's token (c-…).
	Token string
	// Card is the new card JSON object.
	Card string
	// OpenIDs limits the update to these users (card JSON 1.0 non-shared
	// cards); it is sent as the card's "open_ids".
	OpenIDs []string
}

// AddReactionRequest adds a reaction (POST /open-apis/im/v1/messages/:message_id/reactions).
type AddReactionRequest struct {
	MessageID string
	// EmojiType is e.g. "THUMBSUP", "SMILE", "DONE".
	EmojiType string
}

// Reaction identifies a reaction the bot added.
type Reaction struct {
	ID string
}

// RemoveReactionRequest removes a reaction (DELETE …/reactions/:reaction_id).
type RemoveReactionRequest struct {
	MessageID  string
	ReactionID string
}

// RawRequest is any other OpenAPI call, made with the tenant token.
type RawRequest struct {
	// Method is GET, POST, PUT, PATCH or DELETE.
	Method string
	// Path starts with /open-apis/ and may carry a query string.
	Path string
	// Body is a JSON document, or empty.
	Body []byte
}

// RawResponse is a raw call's answer.
type RawResponse struct {
	HTTPStatus int
	Body       []byte
}

// Validate checks r as Lark would, without calling it.
func (r ReplyRequest) Validate() error {
	if r.MessageID == "" {
		return fmt.Errorf("%w: message_id is empty", ErrInvalidRequest)
	}
	if err := validateMessage(r.MsgType, r.Content, r.UUID); err != nil {
		return err
	}
	return checkBodySize(r.MsgType, r.body())
}

func (r ReplyRequest) body() *larkim.ReplyMessageReqBody {
	b := larkim.NewReplyMessageReqBodyBuilder().MsgType(r.MsgType).Content(r.Content).ReplyInThread(r.ReplyInThread)
	if r.UUID != "" {
		b.Uuid(r.UUID)
	}
	return b.Build()
}

// Validate checks r as Lark would, without calling it.
func (r SendRequest) Validate() error {
	switch r.ReceiveIDType {
	case ReceiveIDOpenID, ReceiveIDUserID, ReceiveIDUnionID, ReceiveIDEmail, ReceiveIDChatID:
	default:
		return fmt.Errorf("%w: receive_id_type %q is not one of open_id, user_id, union_id, email, chat_id", ErrInvalidRequest, r.ReceiveIDType)
	}
	if r.ReceiveID == "" {
		return fmt.Errorf("%w: receive_id is empty", ErrInvalidRequest)
	}
	if err := validateMessage(r.MsgType, r.Content, r.UUID); err != nil {
		return err
	}
	return checkBodySize(r.MsgType, r.body())
}

func (r SendRequest) body() *larkim.CreateMessageReqBody {
	b := larkim.NewCreateMessageReqBodyBuilder().ReceiveId(r.ReceiveID).MsgType(r.MsgType).Content(r.Content)
	if r.UUID != "" {
		b.Uuid(r.UUID)
	}
	return b.Build()
}

// Validate checks r as Lark would, without calling it.
func (r UpdateCardRequest) Validate() error {
	if r.MessageID == "" {
		return fmt.Errorf("%w: message_id is empty", ErrInvalidRequest)
	}
	if !isJSONObject(r.Card) {
		return fmt.Errorf("%w: card is not a JSON object", ErrInvalidRequest)
	}
	return checkBodySize("interactive", r.body())
}

func (r UpdateCardRequest) body() *larkim.PatchMessageReqBody {
	return larkim.NewPatchMessageReqBodyBuilder().Content(r.Card).Build()
}

// Validate checks r as Lark would, without calling it.
func (r DelayedCardUpdateRequest) Validate() error {
	_, err := r.body()
	return err
}

// body builds {"token": …, "card": {…, "open_ids": […]}}.
func (r DelayedCardUpdateRequest) body() (any, error) {
	if r.Token == "" {
		return nil, fmt.Errorf("%w: token is empty", ErrInvalidRequest)
	}
	var card map[string]json.RawMessage
	if err := json.Unmarshal([]byte(r.Card), &card); err != nil || card == nil {
		return nil, fmt.Errorf("%w: card is not a JSON object", ErrInvalidRequest)
	}
	if len(r.OpenIDs) > 0 {
		ids, _ := json.Marshal(r.OpenIDs) // []string: cannot fail
		card["open_ids"] = ids
	}
	body := struct {
		Token string                     `json:"token"`
		Card  map[string]json.RawMessage `json:"card"`
	}{r.Token, card}
	if err := checkBodySize("interactive", body); err != nil {
		return nil, err
	}
	return body, nil
}

// Validate checks r as Lark would, without calling it.
func (r AddReactionRequest) Validate() error {
	if r.MessageID == "" {
		return fmt.Errorf("%w: message_id is empty", ErrInvalidRequest)
	}
	if r.EmojiType == "" {
		return fmt.Errorf("%w: emoji_type is empty", ErrInvalidRequest)
	}
	return nil
}

// Validate checks r as Lark would, without calling it.
func (r RemoveReactionRequest) Validate() error {
	if r.MessageID == "" || r.ReactionID == "" {
		return fmt.Errorf("%w: message_id and reaction_id are required", ErrInvalidRequest)
	}
	return nil
}

// Validate checks that r is a well-formed OpenAPI call: a known method, a
// path under /open-apis/ (not the auth endpoints, whose tokens the client
// owns), and a JSON body of at most 1 MiB.
func (r RawRequest) Validate() error {
	switch r.Method {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
	default:
		return fmt.Errorf("%w: method %q is not GET, POST, PUT, PATCH or DELETE", ErrInvalidRequest, r.Method)
	}
	path, _, _ := strings.Cut(r.Path, "?")
	if !strings.HasPrefix(path, "/open-apis/") {
		return fmt.Errorf("%w: path %q does not start with /open-apis/", ErrInvalidRequest, r.Path)
	}
	if strings.HasPrefix(path, "/open-apis/auth/") {
		return fmt.Errorf("%w: path %q: the auth endpoints are the core's", ErrInvalidRequest, r.Path)
	}
	for _, seg := range strings.Split(path, "/") {
		// The SDK reads ":name" segments as path parameters.
		if seg == "." || seg == ".." || strings.HasPrefix(seg, ":") {
			return fmt.Errorf("%w: path %q has a %q segment", ErrInvalidRequest, r.Path, seg)
		}
	}
	if strings.ContainsAny(r.Path, " \t\r\n#") {
		return fmt.Errorf("%w: path %q has whitespace or a fragment", ErrInvalidRequest, r.Path)
	}
	if len(r.Body) > 0 {
		if len(r.Body) > maxRawBody {
			return fmt.Errorf("%w: %w: body of %d bytes is over %d", ErrInvalidRequest, ErrContentTooLarge, len(r.Body), maxRawBody)
		}
		if !json.Valid(r.Body) {
			return fmt.Errorf("%w: body is not a JSON document", ErrInvalidRequest)
		}
	}
	return nil
}

func validateMessage(msgType, content, uuid string) error {
	if msgType == "" {
		return fmt.Errorf("%w: msg_type is empty", ErrInvalidRequest)
	}
	if !json.Valid([]byte(content)) {
		return fmt.Errorf("%w: content is not a JSON document", ErrInvalidRequest)
	}
	if n := utf8.RuneCountInString(uuid); n > maxUUIDLen {
		return fmt.Errorf("%w: uuid has %d characters, more than %d", ErrInvalidRequest, n, maxUUIDLen)
	}
	return nil
}

func isJSONObject(s string) bool {
	var m map[string]json.RawMessage
	return json.Unmarshal([]byte(s), &m) == nil && m != nil
}

// checkBodySize marshals body as the SDK will and checks Lark's limit for
// msgType: 150 KB for text, 30 KB for cards (interactive) and posts.
func checkBodySize(msgType string, body any) error {
	var limit int
	var what string
	switch msgType {
	case "text":
		limit, what = MaxTextBody, "text messages"
	case "interactive", "post":
		limit, what = MaxCardBody, "cards and posts"
	default:
		return nil
	}
	b, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("%w: encoding the body: %v", ErrInvalidRequest, err)
	}
	if len(b) > limit {
		return fmt.Errorf("%w: %w: the %s request body is %.1f KB; Lark accepts at most %d KB for %s",
			ErrInvalidRequest, ErrContentTooLarge, msgType, float64(len(b))/1024, limit>>10, what)
	}
	return nil
}
