package larkemu

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
)

// readJSON reads a body of at most limit bytes into v, writing Lark's
// answer and returning false when it is too big (230025) or not the
// documented JSON (99992402).
func (e *Emulator) readJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) ([]byte, bool) {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		if _, tooBig := errors.AsType[*http.MaxBytesError](err); tooBig {
			e.fail(w, codeContentTooLong, msgContentTooBig)
		} else {
			e.fail(w, codeBadParam, msgBadParam)
		}
		return nil, false
	}
	if err := json.Unmarshal(raw, v); err != nil {
		e.fail(w, codeFieldValidationFailed, msgFieldInvalid, fieldViolation{"body", "request body is not a valid JSON object of the documented fields"})
		return nil, false
	}
	return raw, true
}

// ownMessage finds a message this app sent, writing Lark's answer and
// returning false when there is none (230001) or it was recalled (230011).
func (e *Emulator) ownMessage(w http.ResponseWriter, appID, messageID string) (Message, bool) {
	e.mu.Lock()
	i, known := e.byID[messageID]
	var m Message
	if known {
		m = e.messages[i]
	}
	e.mu.Unlock()
	switch {
	case !known || m.AppID != appID:
		e.fail(w, codeBadParam, msgBadParam+" ext=message not found or not sent by this app")
		return m, false
	case m.Deleted:
		e.fail(w, codeMessageRecalled, msgRecalled)
		return m, false
	}
	return m, true
}

// handlePatch implements PATCH /open-apis/im/v1/messages/{message_id}: it
// replaces a card this app sent, at most 5 times a second per message
// (230020). The body is {"content": "<card JSON as a string>"}, at most 30 KB.
func (e *Emulator) handlePatch(w http.ResponseWriter, r *http.Request, appID string) {
	id := r.PathValue("message_id")
	var body struct {
		Content json.RawMessage `json:"content"`
	}
	raw, ok := e.readJSON(w, r, maxBody, &body)
	if !ok {
		return
	}
	var card string
	if len(body.Content) == 0 || body.Content[0] != '"' || json.Unmarshal(body.Content, &card) != nil {
		e.fail(w, codeFieldValidationFailed, msgFieldInvalid, fieldViolation{"content", "content must be a JSON-encoded string"})
		return
	}
	if len(raw) > maxCardBody {
		e.fail(w, codeContentTooLong, msgContentTooBig)
		return
	}
	if !validContent("interactive", card) {
		e.fail(w, codeBadParam, msgBadParam+" ext=invalid card content")
		return
	}
	m, ok := e.ownMessage(w, appID, id)
	if !ok {
		return
	}
	if m.MsgType != "interactive" {
		e.fail(w, codeBadParam, msgBadParam+" ext=only interactive messages (cards) can be patched")
		return
	}
	if !e.allowTarget(w, "message:"+id, e.limits.PerMessageUpdate) {
		return
	}
	e.mu.Lock()
	e.updates = append(e.updates, Update{Kind: "patch", MessageID: id, Card: card, AppID: appID, Time: e.now()})
	e.mu.Unlock()
	writeJSON(w, http.StatusOK, e.newLogID(), envelope{Code: codeOK, Msg: "success", Data: struct{}{}})
}

// handleDelete implements DELETE /open-apis/im/v1/messages/{message_id}:
// it recalls a message this app sent.
func (e *Emulator) handleDelete(w http.ResponseWriter, r *http.Request, appID string) {
	id := r.PathValue("message_id")
	if _, ok := e.ownMessage(w, appID, id); !ok {
		return
	}
	e.mu.Lock()
	e.messages[e.byID[id]].Deleted = true
	e.mu.Unlock()
	writeJSON(w, http.StatusOK, e.newLogID(), envelope{Code: codeOK, Msg: "success", Data: struct{}{}})
}

// handleCardUpdate implements POST /open-apis/interactive/v1/card/update, the
// delayed update with a card callback's token: {"token": "c-…", "card":
// {…, "open_ids": […]}}. A token is valid for CardTokenTTL and CardTokenUses
// uses, for the app whose card it is; the card is at most 30 KB. Lark does
// not document the codes for a bad token, so the emulator answers 230001
// with the reason.
func (e *Emulator) handleCardUpdate(w http.ResponseWriter, r *http.Request, appID string) {
	var body struct {
		Token string                     `json:"token"`
		Card  map[string]json.RawMessage `json:"card"`
	}
	if _, ok := e.readJSON(w, r, maxBody, &body); !ok {
		return
	}
	var violations []fieldViolation
	if body.Token == "" {
		violations = append(violations, fieldViolation{"token", "token is required"})
	}
	if len(body.Card) == 0 {
		violations = append(violations, fieldViolation{"card", "card is required"})
	}
	if len(violations) > 0 {
		e.fail(w, codeFieldValidationFailed, msgFieldInvalid, violations...)
		return
	}
	var openIDs []string
	if raw, ok := body.Card["open_ids"]; ok {
		if json.Unmarshal(raw, &openIDs) != nil {
			e.fail(w, codeFieldValidationFailed, msgFieldInvalid, fieldViolation{"card.open_ids", "open_ids must be a list of strings"})
			return
		}
		delete(body.Card, "open_ids")
	}
	card, _ := json.Marshal(body.Card) // decoded JSON: cannot fail
	if len(card) > maxCardBody {
		e.fail(w, codeContentTooLong, msgContentTooBig)
		return
	}

	e.mu.Lock()
	now := e.now()
	tok, known := e.cardTokens[body.Token]
	reason := ""
	switch {
	case !known:
		reason = "unknown token"
	case !now.Before(tok.expiresAt):
		reason = "token expired (valid 30 minutes)"
	case tok.uses >= CardTokenUses:
		reason = "token used up (2 uses)"
	default:
		if i, sent := e.byID[tok.messageID]; sent && e.messages[i].AppID != appID {
			reason = "the card was not sent by this app"
		}
	}
	if reason == "" {
		tok.uses++
		e.updates = append(e.updates, Update{Kind: "delayed", MessageID: tok.messageID, Card: string(card), Token: body.Token,
			OpenIDs: openIDs, AppID: appID, Time: now})
	}
	e.mu.Unlock()
	if reason != "" {
		e.fail(w, codeBadParam, msgBadParam+" ext="+reason)
		return
	}
	writeJSON(w, http.StatusOK, e.newLogID(), envelope{Code: codeOK, Msg: "success", Data: struct{}{}})
}

// handleAddReaction implements POST /open-apis/im/v1/messages/{message_id}/reactions.
func (e *Emulator) handleAddReaction(w http.ResponseWriter, r *http.Request, appID string) {
	id := r.PathValue("message_id")
	var body struct {
		ReactionType struct {
			EmojiType string `json:"emoji_type"`
		} `json:"reaction_type"`
	}
	if _, ok := e.readJSON(w, r, maxTokenBody, &body); !ok {
		return
	}
	if body.ReactionType.EmojiType == "" {
		e.fail(w, codeFieldValidationFailed, msgFieldInvalid, fieldViolation{"reaction_type.emoji_type", "emoji_type is required"})
		return
	}
	if !strings.HasPrefix(id, "om_") {
		e.fail(w, codeBadParam, msgBadParam+" ext=invalid message_id")
		return
	}
	e.mu.Lock()
	if i, known := e.byID[id]; known && e.messages[i].Deleted {
		e.mu.Unlock()
		e.fail(w, codeMessageRecalled, msgRecalled)
		return
	}
	rc := Reaction{ReactionID: randomHex(24), MessageID: id, EmojiType: body.ReactionType.EmojiType, AppID: appID, Time: e.now()}
	e.reactions = append(e.reactions, rc)
	e.reactByID[rc.ReactionID] = len(e.reactions) - 1
	e.mu.Unlock()
	e.writeReaction(w, rc)
}

// handleRemoveReaction implements DELETE
// /open-apis/im/v1/messages/{message_id}/reactions/{reaction_id}: only the
// app that added a reaction may remove it.
func (e *Emulator) handleRemoveReaction(w http.ResponseWriter, r *http.Request, appID string) {
	id, rid := r.PathValue("message_id"), r.PathValue("reaction_id")
	e.mu.Lock()
	i, known := e.reactByID[rid]
	var rc Reaction
	if known {
		rc = e.reactions[i]
	}
	ok := known && rc.MessageID == id && rc.AppID == appID && !rc.Removed
	if ok {
		e.reactions[i].Removed = true
	}
	e.mu.Unlock()
	if !ok {
		e.fail(w, codeBadParam, msgBadParam+" ext=reaction not found")
		return
	}
	e.writeReaction(w, rc)
}

// reactionData is the documented reaction: the "data" of add and remove,
// an item of the list.
type reactionData struct {
	ReactionID string `json:"reaction_id"`
	Operator   struct {
		OperatorID   string `json:"operator_id"`
		OperatorType string `json:"operator_type"`
	} `json:"operator"`
	ActionTime   string `json:"action_time"`
	ReactionType struct {
		EmojiType string `json:"emoji_type"`
	} `json:"reaction_type"`
}

func newReactionData(rc Reaction) reactionData {
	d := reactionData{ReactionID: rc.ReactionID, ActionTime: msString(rc.Time)}
	d.Operator.OperatorID, d.Operator.OperatorType = rc.AppID, "app"
	d.ReactionType.EmojiType = rc.EmojiType
	return d
}

// writeReaction answers with the documented reaction "data".
func (e *Emulator) writeReaction(w http.ResponseWriter, rc Reaction) {
	writeJSON(w, http.StatusOK, e.newLogID(), envelope{Code: codeOK, Msg: "success", Data: newReactionData(rc)})
}
