package larkemu

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Body codes and messages, as Lark sends them (docs/lark-facts.md#error-codes;
// status and wording of the auth errors observed on open.feishu.cn).
const (
	codeOK                    = 0
	codeInvalidParam          = 10003    // token endpoint: unknown app, missing fields (HTTP 200)
	codeAppSecretInvalid      = 10014    // token endpoint: wrong secret (HTTP 200)
	codeTokenMissing          = 99991661 // no "Bearer <token>" (HTTP 400)
	codeTenantTokenInvalid    = 99991663 // unknown or expired token (HTTP 400)
	codeFieldValidationFailed = 99992402 // missing/ill-typed request fields (HTTP 400)
	codeBadParam              = 230001   // invalid message content or IDs (HTTP 400)
	codeBotNotInChat          = 230002   // the bot is not in the chat (HTTP 400)
	codeMessageRecalled       = 230011   // the message was recalled (HTTP 400)
	codeMessageRateLimited    = 230020   // per chat / user / message frequency limit (HTTP 400)
	codeContentTooLong        = 230025   // text > 150 KB, card/post > 30 KB (HTTP 400)
	codeRateLimited           = 99991400 // gateway frequency limit (HTTP 429)
	codeReactionNotFound      = 231003   // reactions: the message does not exist or was recalled (HTTP 400)
	codeReactionPageToken     = 231012   // reactions: invalid page_token (HTTP 400)
	codeReactionUserIDType    = 231014   // reactions: invalid user_id_type (HTTP 400)
	codeChatBadParam          = 232001   // chats: invalid request parameter (HTTP 400)
	codeChatInvalidID         = 232006   // chats: invalid chat_id (HTTP 400)
	codeChatOperatorOut       = 232011   // chats: the operator (the bot) is not in the chat (HTTP 400)
	codeChatIDTypeInvalid     = 232015   // chats: unsupported user_id_type / member_id_type (HTTP 400)
	// codeNotFound answers a path or method the emulator does not serve. It is
	// not one of Lark's codes: Lark does not document its answer to an unknown
	// route (docs/lark-facts.md#unknown-routes). A JSON body with a non-zero
	// code makes SDKs report a Lark error (CodeError) instead of failing to
	// decode the body.
	codeNotFound = 404

	msgTokenMissing  = "Missing access token for authorization. Please make a request with token attached."
	msgTokenInvalid  = "Invalid access token for authorization. Please make a request with token attached."
	msgFieldInvalid  = "field validation failed"
	msgBadParam      = "Your request contains an invalid request parameter."
	msgContentTooBig = "The message content exceeds the length limit."
	msgRecalled      = "The message is recalled."
	msgBotNotInChat  = "Bot/User can NOT be out of the chat."

	msgRateLimited        = "request trigger frequency limit"
	msgMessageRateLimited = "This operation triggers the frequency limit."

	msgReactionNotFound   = "The message is not found, maybe not exist or deleted."
	msgReactionPageToken  = "The request has an invalid pageToken."
	msgReactionUserIDType = "user_id_type is invalid."
	msgChatBadParam       = "Your request contains an invalid request parameter."
	msgChatInvalidID      = "Your request specifies a chat_id which is invalid."
	msgChatOperatorOut    = "Operator can NOT be out of the chat."
	msgChatIDTypeInvalid  = "Your request specifies a member_id_type which is NOT supported."
	msgNotFound           = "404 page not found"
)

// API names: the unit of Lark's per-app limits, and Call.API.
const (
	APITenantToken    = "auth.tenant_access_token"
	APISend           = "im.message.create"
	APIReply          = "im.message.reply"
	APIPatch          = "im.message.patch"
	APIDelete         = "im.message.delete"
	APIAddReaction    = "im.message.reaction.create"
	APIRemoveReaction = "im.message.reaction.delete"
	APICardUpdate     = "interactive.card.update"
	APIGetMessage     = "im.message.get"
	APIUpdateMessage  = "im.message.update"
	APIListReactions  = "im.message.reaction.list"
	APIGetChat        = "im.chat.get"
	APIGetChatMembers = "im.chat.members.get"
)

// Request body limits. Lark limits the request body: 150 KB for text,
// 30 KB for cards (interactive) and post. Other bodies are bounded by
// maxBody; beyond it the answer is also 230025.
const (
	maxTextBody  = 150 << 10
	maxCardBody  = 30 << 10
	maxBody      = 1 << 20
	maxTokenBody = 64 << 10
	maxUUIDLen   = 50
)

var receiveIDTypes = map[string]bool{"open_id": true, "user_id": true, "union_id": true, "email": true, "chat_id": true}

// msgTypes lists the sendable message types and the content key each needs
// (empty: any non-empty JSON object).
var msgTypes = map[string]string{
	"text":        "text",
	"post":        "",
	"image":       "image_key",
	"file":        "file_key",
	"audio":       "file_key",
	"media":       "file_key",
	"sticker":     "file_key",
	"interactive": "",
	"share_chat":  "chat_id",
	"share_user":  "user_id",
}

func (e *Emulator) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /open-apis/auth/v3/tenant_access_token/internal", e.recorded(APITenantToken, e.handleTenantToken))
	mux.HandleFunc("POST /open-apis/auth/v3/tenant_access_token/internal/{$}", e.recorded(APITenantToken, e.handleTenantToken))
	mux.HandleFunc("POST /open-apis/im/v1/messages", e.api(APISend, e.handleSend))
	mux.HandleFunc("POST /open-apis/im/v1/messages/{message_id}/reply", e.api(APIReply, e.handleReply))
	mux.HandleFunc("PATCH /open-apis/im/v1/messages/{message_id}", e.api(APIPatch, e.handlePatch))
	mux.HandleFunc("DELETE /open-apis/im/v1/messages/{message_id}", e.api(APIDelete, e.handleDelete))
	mux.HandleFunc("POST /open-apis/im/v1/messages/{message_id}/reactions", e.api(APIAddReaction, e.handleAddReaction))
	mux.HandleFunc("DELETE /open-apis/im/v1/messages/{message_id}/reactions/{reaction_id}", e.api(APIRemoveReaction, e.handleRemoveReaction))
	mux.HandleFunc("POST /open-apis/interactive/v1/card/update", e.api(APICardUpdate, e.handleCardUpdate))
	mux.HandleFunc("GET /open-apis/im/v1/messages/{message_id}", e.api(APIGetMessage, e.handleGetMessage))
	mux.HandleFunc("PUT /open-apis/im/v1/messages/{message_id}", e.api(APIUpdateMessage, e.handleUpdateMessage))
	mux.HandleFunc("GET /open-apis/im/v1/messages/{message_id}/reactions", e.api(APIListReactions, e.handleListReactions))
	mux.HandleFunc("GET /open-apis/im/v1/chats/{chat_id}", e.api(APIGetChat, e.handleGetChat))
	mux.HandleFunc("GET /open-apis/im/v1/chats/{chat_id}/members", e.api(APIGetChatMembers, e.handleGetChatMembers))
	mux.HandleFunc("GET /_emu/messages", e.handleListMessages)
	mux.HandleFunc("GET /_emu/updates", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, "", nonNil(e.Updates())) })
	mux.HandleFunc("GET /_emu/reactions", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, "", nonNil(e.Reactions())) })
	mux.HandleFunc("GET /_emu/calls", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, "", nonNil(e.Calls())) })
	mux.HandleFunc("POST /_emu/reset", e.handleReset)
	mux.HandleFunc("GET /_emu/faults", e.handleFaults)
	mux.HandleFunc("POST /_emu/faults", e.handleFaults)
	mux.HandleFunc("DELETE /_emu/faults", e.handleFaults)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// An unknown path or a wrong method is a 404 (not ServeMux's 405 or
		// redirects) with a JSON body, so SDKs report a Lark error.
		if _, pattern := mux.Handler(r); pattern == "" || !canonicalPath(r.URL.Path) {
			writeNotFound(w)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// canonicalPath reports whether p needs no cleaning (no "//", "." or ".."
// segments; a trailing slash is kept): ServeMux would answer any other
// path with a redirect to its cleaned form.
func canonicalPath(p string) bool {
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c == p
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// apiHandler serves one authenticated OpenAPI call for appID.
type apiHandler func(w http.ResponseWriter, r *http.Request, appID string)

// api wraps an OpenAPI endpoint: it records the call, injects faults,
// authenticates, and applies the app's limits for the API, in that order.
func (e *Emulator) api(name string, h apiHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		rec := &recorder{ResponseWriter: w}
		call := Call{Time: e.now(), Method: r.Method, Path: r.URL.Path, API: name}
		defer func() { e.recordCall(call, rec) }()
		// Read the body first: the server notices a client that went away
		// (and cancels r.Context(), which latency faults wait on) only once
		// the body is consumed.
		raw, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
		if err != nil {
			e.fail(rec, codeBadParam, msgBadParam)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(raw))
		if e.injectFault(rec, r) {
			return
		}
		appID, ok := e.authenticate(rec, r)
		if !ok {
			return
		}
		call.AppID = appID
		if !e.allowApp(rec, appID, name) {
			return
		}
		h(rec, r, appID)
	}
}

// recorded records calls to an endpoint outside api (the token endpoint).
func (e *Emulator) recorded(name string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		rec := &recorder{ResponseWriter: w}
		call := Call{Time: e.now(), Method: r.Method, Path: r.URL.Path, API: name}
		defer func() { e.recordCall(call, rec) }()
		h(rec, r)
	}
}

func (e *Emulator) recordCall(c Call, rec *recorder) {
	c.Status, c.Code = rec.status, rec.code
	if c.Status == 0 {
		c.Status = 499 // the client went away before an answer
	}
	e.mu.Lock()
	e.calls = append(e.calls, c)
	e.mu.Unlock()
}

// recorder remembers the status and the body code of an answer.
type recorder struct {
	http.ResponseWriter
	status int
	code   int
}

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// envelope is every OpenAPI JSON response.
type envelope struct {
	Code  int          `json:"code"`
	Msg   string       `json:"msg"`
	Data  any          `json:"data,omitempty"`
	Error *errorDetail `json:"error,omitempty"`
}

type errorDetail struct {
	LogID           string           `json:"log_id"`
	FieldViolations []fieldViolation `json:"field_violations,omitempty"`
}

type fieldViolation struct {
	Field       string `json:"field"`
	Description string `json:"description"`
}

func (e *Emulator) newLogID() string {
	return e.now().UTC().Format("20060102150405") + strings.ToUpper(randomHex(12))
}

func writeJSON(w http.ResponseWriter, status int, logID string, v any) {
	if rec, ok := w.(*recorder); ok {
		switch v := v.(type) {
		case envelope:
			rec.code = v.Code
		case tokenResponse:
			rec.code = v.Code
		}
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	if logID != "" {
		w.Header().Set("X-Tt-Logid", logID)
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeNotFound answers a route the emulator does not serve
// (docs/lark-facts.md#unknown-routes).
func writeNotFound(w http.ResponseWriter) {
	writeJSON(w, http.StatusNotFound, "", envelope{Code: codeNotFound, Msg: msgNotFound})
}

// fail writes an OpenAPI error: HTTP 400, the code, and error.log_id.
func (e *Emulator) fail(w http.ResponseWriter, code int, msg string, violations ...fieldViolation) {
	logID := e.newLogID()
	writeJSON(w, http.StatusBadRequest, logID, envelope{
		Code:  code,
		Msg:   msg,
		Error: &errorDetail{LogID: logID, FieldViolations: violations},
	})
}

// --- tenant_access_token ---------------------------------------------------

type tokenResponse struct {
	Code              int       `json:"code"`
	Msg               string    `json:"msg"`
	Data              *struct{} `json:"data,omitempty"`
	TenantAccessToken string    `json:"tenant_access_token,omitempty"`
	Expire            int       `json:"expire,omitempty"`
}

// handleTenantToken implements auth/v3/tenant_access_token/internal. Lark
// answers failures with HTTP 200 and a code: 10003 for an unknown app or
// missing fields, 10014 for a wrong secret.
func (e *Emulator) handleTenantToken(w http.ResponseWriter, r *http.Request) {
	var req struct {
		AppID     string `json:"app_id"`
		AppSecret string `json:"app_secret"`
	}
	decodeErr := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxTokenBody)).Decode(&req)

	e.mu.Lock()
	defer e.mu.Unlock()
	e.fetches++
	logID := e.newLogID()
	invalid := func(code int, msg string) {
		writeJSON(w, http.StatusOK, logID, tokenResponse{Code: code, Msg: msg, Data: &struct{}{}})
	}
	if decodeErr != nil || req.AppID == "" || req.AppSecret == "" {
		invalid(codeInvalidParam, "invalid param")
		return
	}
	if len(e.apps) > 0 {
		secret, known := e.apps[req.AppID]
		if !known {
			invalid(codeInvalidParam, "invalid param")
			return
		}
		if secret != req.AppSecret {
			invalid(codeAppSecretInvalid, "app secret invalid")
			return
		}
	}
	tok, remaining := e.issueTokenLocked(req.AppID)
	e.log.Debug("issued tenant access token", "app_id", req.AppID, "expire", remaining)
	writeJSON(w, http.StatusOK, logID, tokenResponse{
		Code:              codeOK,
		Msg:               "ok",
		TenantAccessToken: tok,
		Expire:            int(remaining / time.Second),
	})
}

// issueTokenLocked returns the app's current token while enough of it
// remains, else a new one. Old tokens stay valid until they expire.
func (e *Emulator) issueTokenLocked(appID string) (string, time.Duration) {
	now := e.now()
	window := min(30*time.Minute, e.ttl/4)
	if tok, ok := e.current[appID]; ok {
		if remaining := e.tokens[tok].expiresAt.Sub(now); remaining >= window {
			return tok, remaining
		}
	}
	for tok, it := range e.tokens {
		if !now.Before(it.expiresAt) {
			delete(e.tokens, tok)
		}
	}
	tok := "t-" + randomHex(20)
	e.tokens[tok] = issuedToken{appID: appID, expiresAt: now.Add(e.ttl)}
	e.current[appID] = tok
	return tok, e.ttl
}

// authenticate checks the Bearer token and returns its app ID, or writes
// the error Lark sends: 99991661 without "Bearer <token>", 99991663 for an
// unknown or expired token, both HTTP 400.
func (e *Emulator) authenticate(w http.ResponseWriter, r *http.Request) (string, bool) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	tok = strings.TrimSpace(tok)
	if !ok || tok == "" {
		e.fail(w, codeTokenMissing, msgTokenMissing)
		return "", false
	}
	e.mu.Lock()
	it, known := e.tokens[tok]
	valid := known && e.now().Before(it.expiresAt)
	e.mu.Unlock()
	if !valid {
		e.fail(w, codeTenantTokenInvalid, msgTokenInvalid)
		return "", false
	}
	return it.appID, true
}

// --- messages ------------------------------------------------------------

// messageBody is the union of the send and reply request bodies.
type messageBody struct {
	ReceiveID     string          `json:"receive_id"`
	MsgType       string          `json:"msg_type"`
	Content       json.RawMessage `json:"content"`
	UUID          string          `json:"uuid"`
	ReplyInThread bool            `json:"reply_in_thread"`

	content string // Content decoded from its JSON string
}

// readMessageBody reads and validates a send or reply body. It writes the
// error response and returns false when the body is rejected.
func (e *Emulator) readMessageBody(w http.ResponseWriter, r *http.Request, needReceiveID bool) (messageBody, bool) {
	var b messageBody
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		if _, tooBig := errors.AsType[*http.MaxBytesError](err); tooBig {
			e.fail(w, codeContentTooLong, msgContentTooBig)
		} else {
			e.fail(w, codeBadParam, msgBadParam)
		}
		return b, false
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		e.fail(w, codeFieldValidationFailed, msgFieldInvalid, fieldViolation{"body", "request body is not a valid JSON object of the documented fields"})
		return b, false
	}
	var violations []fieldViolation
	if needReceiveID && b.ReceiveID == "" {
		violations = append(violations, fieldViolation{"receive_id", "receive_id is required"})
	}
	if b.MsgType == "" {
		violations = append(violations, fieldViolation{"msg_type", "msg_type is required"})
	} else if _, known := msgTypes[b.MsgType]; !known {
		violations = append(violations, fieldViolation{"msg_type", "msg_type " + strconv.Quote(b.MsgType) + " is not a supported message type"})
	}
	if len(b.Content) == 0 || string(b.Content) == "null" {
		violations = append(violations, fieldViolation{"content", "content is required"})
	} else if b.Content[0] != '"' || json.Unmarshal(b.Content, &b.content) != nil {
		violations = append(violations, fieldViolation{"content", "content must be a JSON-encoded string, not an object"})
	}
	if n := utf8.RuneCountInString(b.UUID); n > maxUUIDLen {
		violations = append(violations, fieldViolation{"uuid", "uuid is longer than 50 characters"})
	}
	if len(violations) > 0 {
		e.fail(w, codeFieldValidationFailed, msgFieldInvalid, violations...)
		return b, false
	}
	limit := maxBody
	switch b.MsgType {
	case "text":
		limit = maxTextBody
	case "post", "interactive":
		limit = maxCardBody
	}
	if len(raw) > limit {
		e.fail(w, codeContentTooLong, msgContentTooBig)
		return b, false
	}
	if !validContent(b.MsgType, b.content) {
		e.fail(w, codeBadParam, msgBadParam+" ext=invalid message content for msg_type "+b.MsgType)
		return b, false
	}
	return b, true
}

// validContent checks that content is a JSON object with the key msgType
// needs (text: a string "text"; image: "image_key"; …).
func validContent(msgType, content string) bool {
	var obj map[string]any
	if err := json.Unmarshal([]byte(content), &obj); err != nil || len(obj) == 0 {
		return false
	}
	key := msgTypes[msgType]
	if key == "" {
		return true
	}
	s, ok := obj[key].(string)
	return ok && (s != "" || msgType == "text")
}

// handleSend implements POST /open-apis/im/v1/messages?receive_id_type=….
// Sends to a user (any receive_id_type but chat_id) land in a p2p chat
// derived from the user and count against the per-user limit; sends to a
// chat count against the chat's.
func (e *Emulator) handleSend(w http.ResponseWriter, r *http.Request, appID string) {
	idType := r.URL.Query().Get("receive_id_type")
	if !receiveIDTypes[idType] {
		e.fail(w, codeFieldValidationFailed, msgFieldInvalid, fieldViolation{"receive_id_type", "receive_id_type must be one of open_id, user_id, union_id, email, chat_id"})
		return
	}
	b, ok := e.readMessageBody(w, r, true)
	if !ok {
		return
	}
	if !validReceiveID(idType, b.ReceiveID) {
		e.fail(w, codeBadParam, msgBadParam+" ext=invalid receive_id for receive_id_type "+idType)
		return
	}
	chatID := b.ReceiveID
	scope, limit := "chat:"+chatID, e.limits.PerChat
	if idType != "chat_id" {
		chatID = derivedID("oc_", 16, "p2p", appID, idType, b.ReceiveID)
		scope, limit = "user:"+idType+":"+b.ReceiveID, e.limits.PerUser
	}
	if !e.allowTarget(w, scope, limit) || !e.botInChat(w, chatID) {
		return
	}
	e.record(w, appID, b, Message{
		ChatID:        chatID,
		ReceiveIDType: idType,
		ReceiveID:     b.ReceiveID,
	})
}

// botInChat writes 230002 unless the bot is in chatID.
func (e *Emulator) botInChat(w http.ResponseWriter, chatID string) bool {
	e.mu.Lock()
	out := e.botOut[chatID]
	e.mu.Unlock()
	if out {
		e.fail(w, codeBotNotInChat, msgBotNotInChat)
		return false
	}
	return true
}

// validReceiveID checks the ID's documented shape for its type.
func validReceiveID(idType, id string) bool {
	switch idType {
	case "chat_id":
		return strings.HasPrefix(id, "oc_")
	case "open_id":
		return strings.HasPrefix(id, "ou_")
	case "union_id":
		return strings.HasPrefix(id, "on_")
	case "email":
		return strings.Contains(id, "@")
	}
	return id != ""
}

// handleReply implements POST /open-apis/im/v1/messages/{message_id}/reply.
// A reply to a message the emulator knows (sent, or registered with
// RegisterInbound) inherits its chat, root and thread; any other om_ ID is
// accepted as a root message in a chat derived from its ID. Replies count
// against the chat's limit.
func (e *Emulator) handleReply(w http.ResponseWriter, r *http.Request, appID string) {
	parentID := r.PathValue("message_id")
	if !strings.HasPrefix(parentID, "om_") {
		e.fail(w, codeBadParam, msgBadParam+" ext=invalid message_id")
		return
	}
	b, ok := e.readMessageBody(w, r, false)
	if !ok {
		return
	}
	b.ReceiveID = "" // not a reply field
	m := Message{ParentID: parentID, RootID: parentID, ReplyInThread: b.ReplyInThread}
	e.mu.Lock()
	deleted := false
	if i, known := e.byID[parentID]; known {
		parent := e.messages[i]
		deleted = parent.Deleted
		m.ChatID = parent.ChatID
		if parent.RootID != "" {
			m.RootID = parent.RootID
		}
		m.ThreadID = parent.ThreadID
	} else if in, known := e.inbound[parentID]; known {
		m.ChatID = in.ChatID
	}
	e.mu.Unlock()
	if deleted {
		e.fail(w, codeMessageRecalled, msgRecalled)
		return
	}
	if m.ChatID == "" {
		m.ChatID = derivedID("oc_", 16, "chat-of", parentID)
	}
	if m.ThreadID == "" && b.ReplyInThread {
		m.ThreadID = derivedID("omt_", 8, "thread", m.RootID)
	}
	if !e.allowTarget(w, "chat:"+m.ChatID, e.limits.PerChat) || !e.botInChat(w, m.ChatID) {
		return
	}
	e.record(w, appID, b, m)
}

// record stores m (unless b.UUID was seen from this app within UUIDTTL, in
// which case the earlier message is returned) and writes the response.
func (e *Emulator) record(w http.ResponseWriter, appID string, b messageBody, m Message) {
	e.mu.Lock()
	now := e.now()
	e.expireUUIDsLocked(now)
	key := uuidKey{appID, b.UUID}
	if b.UUID != "" {
		if ent, seen := e.uuids[key]; seen {
			dup := e.messages[ent.index]
			e.mu.Unlock()
			e.log.Debug("uuid seen within an hour; returning the earlier message", "uuid", b.UUID, "message_id", dup.MessageID)
			e.writeMessage(w, dup)
			return
		}
	}
	m.MessageID = "om_" + randomHex(16)
	m.MsgType = b.MsgType
	m.Content = b.content
	m.UUID = b.UUID
	m.AppID = appID
	m.CreateTime = now
	e.messages = append(e.messages, m)
	e.byID[m.MessageID] = len(e.messages) - 1
	if b.UUID != "" {
		e.uuids[key] = uuidEntry{index: len(e.messages) - 1, expiresAt: now.Add(UUIDTTL)}
		e.uuidFIFO = append(e.uuidFIFO, key)
	}
	e.mu.Unlock()
	e.log.Debug("recorded message", "message_id", m.MessageID, "chat_id", m.ChatID, "parent_id", m.ParentID, "msg_type", m.MsgType)
	e.writeMessage(w, m)
}

func (e *Emulator) expireUUIDsLocked(now time.Time) {
	for len(e.uuidFIFO) > 0 {
		key := e.uuidFIFO[0]
		if ent, ok := e.uuids[key]; ok && now.Before(ent.expiresAt) {
			return
		}
		delete(e.uuids, key)
		e.uuidFIFO = e.uuidFIFO[1:]
	}
}

// messageData is the documented send/reply response "data"
// (docs/lark-facts.md#messages).
type messageData struct {
	MessageID  string          `json:"message_id"`
	RootID     string          `json:"root_id,omitempty"`
	ParentID   string          `json:"parent_id,omitempty"`
	ThreadID   string          `json:"thread_id,omitempty"`
	MsgType    string          `json:"msg_type"`
	CreateTime string          `json:"create_time"`
	UpdateTime string          `json:"update_time"`
	Deleted    bool            `json:"deleted"`
	Updated    bool            `json:"updated"`
	ChatID     string          `json:"chat_id"`
	Sender     senderData      `json:"sender"`
	Body       messageBodyData `json:"body"`
}

type senderData struct {
	ID         string `json:"id"`
	IDType     string `json:"id_type"`
	SenderType string `json:"sender_type"`
	TenantKey  string `json:"tenant_key"`
}

type messageBodyData struct {
	Content string `json:"content"`
}

func msString(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

func (e *Emulator) writeMessage(w http.ResponseWriter, m Message) {
	writeJSON(w, http.StatusOK, e.newLogID(), envelope{Code: codeOK, Msg: "success", Data: e.messageData(m)})
}

// recalledContent replaces a recalled message's content when it is read
// back: Lark documents only that deleted is true, not what body it keeps.
const recalledContent = "This message was recalled"

// messageData describes a message the bot sent, as send, reply, edit and
// message.get answer it.
func (e *Emulator) messageData(m Message) messageData {
	update := m.CreateTime
	if !m.UpdateTime.IsZero() {
		update = m.UpdateTime
	}
	d := messageData{
		MessageID:  m.MessageID,
		RootID:     m.RootID,
		ParentID:   m.ParentID,
		ThreadID:   m.ThreadID,
		MsgType:    m.MsgType,
		CreateTime: msString(m.CreateTime),
		UpdateTime: msString(update),
		Deleted:    m.Deleted,
		Updated:    m.Edits > 0,
		ChatID:     m.ChatID,
		Sender:     senderData{ID: m.AppID, IDType: "app_id", SenderType: "app", TenantKey: e.tenantKey},
		Body:       messageBodyData{Content: m.Content},
	}
	if m.Deleted {
		d.Body.Content = recalledContent
	}
	return d
}

// derivedID is a stable ID with prefix for the given parts: the same chat
// or thread gets the same ID every time.
func derivedID(prefix string, n int, parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return prefix + hex.EncodeToString(h[:n])
}

// --- inspection --------------------------------------------------------------

// handleListMessages serves GET /_emu/messages: the recorded messages as a
// JSON list, filtered by any of chat_id, parent_id, root_id.
func (e *Emulator) handleListMessages(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	out := []Message{}
	for _, m := range e.Messages() {
		if v := q.Get("chat_id"); v != "" && m.ChatID != v {
			continue
		}
		if v := q.Get("parent_id"); v != "" && m.ParentID != v {
			continue
		}
		if v := q.Get("root_id"); v != "" && m.RootID != v {
			continue
		}
		out = append(out, m)
	}
	writeJSON(w, http.StatusOK, "", out)
}

// handleReset serves POST /_emu/reset.
func (e *Emulator) handleReset(w http.ResponseWriter, _ *http.Request) {
	e.Reset()
	writeJSON(w, http.StatusOK, "", envelope{Code: codeOK, Msg: "ok"})
}
