package larkemu

// The calls a plugin's raw calls commonly make besides sending: reading a
// message, editing one, listing its reactions, reading a chat and its
// members (docs/lark-facts.md#reading-and-editing). Shapes follow Lark's
// pages and the official SDK's im/v1 types (GetMessageRespData,
// UpdateMessageReqBody, ListMessageReactionRespData, GetChatRespData,
// GetChatMembersRespData).

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

// MaxEdits is how many times one message can be edited (PUT).
const MaxEdits = 20

// Page sizes of the list calls: default and largest accepted.
const (
	reactionsPageSize    = 20
	reactionsMaxPageSize = 50
	membersPageSize      = 20
	membersMaxPageSize   = 100
)

const (
	codeReactionNoAccess = 231008 // reactions: the bot is not in the message's chat (HTTP 400)
	msgReactionNoAccess  = "The operator has no access to the message."
)

var userIDTypes = map[string]bool{"open_id": true, "user_id": true, "union_id": true}

// userIDType reads a user_id_type or member_id_type query value: open_id
// when absent.
func userIDType(v string) (string, bool) {
	if v == "" {
		return "open_id", true
	}
	return v, userIDTypes[v]
}

// userIDOf is a user's ID of idType. The emulator knows users by open_id;
// the other IDs are derived from it, stable across calls.
func userIDOf(openID, idType string) string {
	switch idType {
	case "union_id":
		return derivedID("on_", 16, "union-of", openID)
	case "user_id":
		return derivedID("", 4, "user-of", openID)
	}
	return openID
}

// Page tokens are opaque to clients, as Lark's are; the emulator's encode
// the offset of the next item.
const pageTokenPrefix = "larkemu-page:"

func pageToken(offset int) string {
	return base64.RawURLEncoding.EncodeToString([]byte(pageTokenPrefix + strconv.Itoa(offset)))
}

// parsePageToken reads a page_token for a list of n items: 0 when absent.
func parsePageToken(tok string, n int) (int, bool) {
	if tok == "" {
		return 0, true
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return 0, false
	}
	s, ok := strings.CutPrefix(string(b), pageTokenPrefix)
	if !ok {
		return 0, false
	}
	off, err := strconv.Atoi(s)
	if err != nil || off < 0 || off > n {
		return 0, false
	}
	return off, true
}

// parsePageSize reads a page_size: def when absent, else 1 to most.
func parsePageSize(v string, def, most int) (int, bool) {
	if v == "" {
		return def, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > most {
		return 0, false
	}
	return n, true
}

// paginate returns the page of items from off and the next page's token
// ("" on the last page).
func paginate[T any](items []T, off, size int) ([]T, string) {
	end := min(off+size, len(items))
	next := ""
	if end < len(items) {
		next = pageToken(end)
	}
	return nonNil(items[off:end]), next
}

// --- message.get -------------------------------------------------------------

// handleGetMessage implements GET /open-apis/im/v1/messages/{message_id}:
// data.items holds the message, one the bot sent (any app's: the bot reads
// what is in its chats) or one registered with RegisterInboundMessage. A
// recalled message comes back with deleted true and its content gone.
// Unknown IDs answer 230001, a message in a chat the bot left 230002.
func (e *Emulator) handleGetMessage(w http.ResponseWriter, r *http.Request, _ string) {
	id := r.PathValue("message_id")
	idType, ok := userIDType(r.URL.Query().Get("user_id_type"))
	if !ok {
		e.fail(w, codeFieldValidationFailed, msgFieldInvalid, fieldViolation{"user_id_type", "user_id_type must be one of open_id, user_id, union_id"})
		return
	}
	e.mu.Lock()
	var item messageData
	found := true
	if i, sent := e.byID[id]; sent {
		item = e.messageData(e.messages[i])
	} else if in, received := e.inbound[id]; received {
		item = e.inboundData(in, idType)
	} else {
		found = false
	}
	out := found && e.botOut[item.ChatID]
	e.mu.Unlock()
	switch {
	case !found:
		e.fail(w, codeBadParam, msgBadParam+" ext=invalid message_id")
	case out:
		e.fail(w, codeBotNotInChat, msgBotNotInChat)
	default:
		writeJSON(w, http.StatusOK, e.newLogID(), envelope{Code: codeOK, Msg: "success", Data: struct {
			Items []messageData `json:"items"`
		}{[]messageData{item}}})
	}
}

// inboundData describes a user's message, the sender in idType.
func (e *Emulator) inboundData(in InboundMessage, idType string) messageData {
	ms := msString(in.CreateTime)
	return messageData{
		MessageID:  in.MessageID,
		MsgType:    in.MsgType,
		CreateTime: ms,
		UpdateTime: ms,
		ChatID:     in.ChatID,
		Sender:     senderData{ID: userIDOf(in.SenderOpenID, idType), IDType: idType, SenderType: "user", TenantKey: e.tenantKey},
		Body:       messageBodyData{Content: in.Content},
	}
}

// --- message.update ----------------------------------------------------------

// handleUpdateMessage implements PUT /open-apis/im/v1/messages/{message_id}:
// it edits a text or post message this app sent, at most MaxEdits times;
// the body is {"msg_type": "text"|"post", "content": "<JSON as a string>"},
// as large as a send of that type may be. It answers with the edited
// message. Lark documents the limits but not the code for the 21st edit;
// the emulator answers 230001 with the reason.
func (e *Emulator) handleUpdateMessage(w http.ResponseWriter, r *http.Request, appID string) {
	id := r.PathValue("message_id")
	var body struct {
		MsgType string          `json:"msg_type"`
		Content json.RawMessage `json:"content"`
	}
	raw, ok := e.readJSON(w, r, maxBody, &body)
	if !ok {
		return
	}
	var violations []fieldViolation
	if body.MsgType != "text" && body.MsgType != "post" {
		violations = append(violations, fieldViolation{"msg_type", "msg_type must be text or post"})
	}
	var content string
	if len(body.Content) == 0 || body.Content[0] != '"' || json.Unmarshal(body.Content, &content) != nil {
		violations = append(violations, fieldViolation{"content", "content must be a JSON-encoded string"})
	}
	if len(violations) > 0 {
		e.fail(w, codeFieldValidationFailed, msgFieldInvalid, violations...)
		return
	}
	limit := maxTextBody
	if body.MsgType == "post" {
		limit = maxCardBody
	}
	if len(raw) > limit {
		e.fail(w, codeContentTooLong, msgContentTooBig)
		return
	}
	if !validContent(body.MsgType, content) {
		e.fail(w, codeBadParam, msgBadParam+" ext=invalid message content for msg_type "+body.MsgType)
		return
	}
	m, ok := e.ownMessage(w, appID, id)
	if !ok || !e.botInChat(w, m.ChatID) {
		return
	}
	e.mu.Lock()
	i, still := e.byID[id]
	if !still { // forgotten by a Reset since ownMessage looked
		e.mu.Unlock()
		e.fail(w, codeBadParam, msgBadParam+" ext=invalid message_id")
		return
	}
	cur := &e.messages[i]
	reason := ""
	switch {
	case cur.Deleted: // recalled since ownMessage looked
	case cur.MsgType != "text" && cur.MsgType != "post":
		reason = "only text and post messages can be edited"
	case cur.Edits >= MaxEdits:
		reason = "the message was already edited " + strconv.Itoa(MaxEdits) + " times"
	default:
		cur.Edits++
		cur.MsgType = body.MsgType
		cur.Content = content
		cur.UpdateTime = e.now()
	}
	edited := *cur
	e.mu.Unlock()
	switch {
	case edited.Deleted:
		e.fail(w, codeMessageRecalled, msgRecalled)
	case reason != "":
		e.fail(w, codeBadParam, msgBadParam+" ext="+reason)
	default:
		e.log.Debug("edited message", "message_id", id, "edits", edited.Edits)
		e.writeMessage(w, edited)
	}
}

// --- messageReaction.list ----------------------------------------------------

// handleListReactions implements GET
// /open-apis/im/v1/messages/{message_id}/reactions[?reaction_type=&page_size=&page_token=&user_id_type=]:
// the reactions on the message in the order they were added, of one
// emoji_type when reaction_type is given, page_size (default 20, at most
// 50) at a time. Like adding one, listing works on any om_ ID; a recalled
// message answers 231003, one in a chat the bot left 231008.
func (e *Emulator) handleListReactions(w http.ResponseWriter, r *http.Request, _ string) {
	id := r.PathValue("message_id")
	q := r.URL.Query()
	if _, ok := userIDType(q.Get("user_id_type")); !ok {
		e.fail(w, codeReactionUserIDType, msgReactionUserIDType)
		return
	}
	size, ok := parsePageSize(q.Get("page_size"), reactionsPageSize, reactionsMaxPageSize)
	if !ok {
		e.fail(w, codeFieldValidationFailed, msgFieldInvalid, fieldViolation{"page_size", "page_size must be a number from 1 to 50"})
		return
	}
	emoji := q.Get("reaction_type")
	e.mu.Lock()
	recalled, chatID := false, ""
	if i, sent := e.byID[id]; sent {
		recalled, chatID = e.messages[i].Deleted, e.messages[i].ChatID
	} else if in, received := e.inbound[id]; received {
		chatID = in.ChatID
	}
	out := chatID != "" && e.botOut[chatID]
	var items []reactionData
	for _, rc := range e.reactions {
		if rc.MessageID == id && !rc.Removed && (emoji == "" || rc.EmojiType == emoji) {
			items = append(items, newReactionData(rc))
		}
	}
	e.mu.Unlock()
	if !strings.HasPrefix(id, "om_") || recalled {
		e.fail(w, codeReactionNotFound, msgReactionNotFound)
		return
	}
	if out {
		e.fail(w, codeReactionNoAccess, msgReactionNoAccess)
		return
	}
	off, ok := parsePageToken(q.Get("page_token"), len(items))
	if !ok {
		e.fail(w, codeReactionPageToken, msgReactionPageToken)
		return
	}
	page, next := paginate(items, off, size)
	writeJSON(w, http.StatusOK, e.newLogID(), envelope{Code: codeOK, Msg: "success", Data: struct {
		Items     []reactionData `json:"items"`
		HasMore   bool           `json:"has_more"`
		PageToken string         `json:"page_token,omitempty"`
	}{page, next != "", next}})
}

// --- chat.get ----------------------------------------------------------------

// chatData is the documented chat.get "data". Only avatar and name are set
// for a chat the bot is not in: Lark then answers only the basics.
type chatData struct {
	Avatar                 string `json:"avatar"`
	Name                   string `json:"name"`
	Description            string `json:"description,omitempty"`
	AddMemberPermission    string `json:"add_member_permission,omitempty"`
	ShareCardPermission    string `json:"share_card_permission,omitempty"`
	AtAllPermission        string `json:"at_all_permission,omitempty"`
	EditPermission         string `json:"edit_permission,omitempty"`
	OwnerIDType            string `json:"owner_id_type,omitempty"`
	OwnerID                string `json:"owner_id,omitempty"`
	GroupMessageType       string `json:"group_message_type,omitempty"`
	ChatMode               string `json:"chat_mode,omitempty"`
	ChatType               string `json:"chat_type,omitempty"`
	ChatTag                string `json:"chat_tag,omitempty"`
	JoinMessageVisibility  string `json:"join_message_visibility,omitempty"`
	LeaveMessageVisibility string `json:"leave_message_visibility,omitempty"`
	MembershipApproval     string `json:"membership_approval,omitempty"`
	ModerationPermission   string `json:"moderation_permission,omitempty"`
	External               *bool  `json:"external,omitempty"`
	TenantKey              string `json:"tenant_key,omitempty"`
	UserCount              string `json:"user_count,omitempty"`
	BotCount               string `json:"bot_count,omitempty"`
}

// chatForLocked returns the chat described for id, or the default one.
// e.mu must be held.
func (e *Emulator) chatForLocked(id string) Chat {
	if c, ok := e.chats[id]; ok {
		return c
	}
	return Chat{ChatID: id, Name: id}
}

// handleGetChat implements GET /open-apis/im/v1/chats/{chat_id}[?user_id_type=]:
// a chat described with SetChat, or the default one (see SetChat). A chat
// the bot is not in answers only its name and avatar; an ID that is not an
// oc_ chat ID answers 232006, an unknown user_id_type 232015.
func (e *Emulator) handleGetChat(w http.ResponseWriter, r *http.Request, _ string) {
	id := r.PathValue("chat_id")
	idType, ok := userIDType(r.URL.Query().Get("user_id_type"))
	if !ok {
		e.fail(w, codeChatIDTypeInvalid, msgChatIDTypeInvalid)
		return
	}
	if !strings.HasPrefix(id, "oc_") {
		e.fail(w, codeChatInvalidID, msgChatInvalidID)
		return
	}
	e.mu.Lock()
	c := e.chatForLocked(id)
	out := e.botOut[id]
	e.mu.Unlock()
	// The .invalid domain cannot resolve: the emulator has no images.
	d := chatData{Avatar: "https://larkemu.invalid/avatar/" + id, Name: c.Name}
	if !out {
		mode, msgType := "group", "chat"
		if c.Mode == "topic" {
			mode, msgType = "topic", "thread"
		}
		external := c.External
		d.Description = c.Description
		d.AddMemberPermission, d.ShareCardPermission, d.AtAllPermission, d.EditPermission = "all_members", "allowed", "all_members", "all_members"
		if c.OwnerOpenID != "" {
			d.OwnerIDType, d.OwnerID = idType, userIDOf(c.OwnerOpenID, idType)
		}
		d.GroupMessageType, d.ChatMode, d.ChatType, d.ChatTag = msgType, mode, "private", "inner"
		d.JoinMessageVisibility, d.LeaveMessageVisibility = "all_members", "all_members"
		d.MembershipApproval, d.ModerationPermission = "no_approval_required", "all_members"
		d.External = &external
		d.TenantKey = e.tenantKey
		d.UserCount, d.BotCount = strconv.Itoa(len(c.Members)), "1"
	}
	writeJSON(w, http.StatusOK, e.newLogID(), envelope{Code: codeOK, Msg: "success", Data: d})
}

// --- chatMembers.get ---------------------------------------------------------

type memberData struct {
	MemberIDType string `json:"member_id_type"`
	MemberID     string `json:"member_id"`
	Name         string `json:"name"`
	TenantKey    string `json:"tenant_key"`
}

// handleGetChatMembers implements GET
// /open-apis/im/v1/chats/{chat_id}/members[?member_id_type=&page_size=&page_token=]:
// the chat's users (bots are left out, as on Lark), page_size (default 20,
// at most 100) at a time, with member_total. 232006 for an ID that is not
// an oc_ chat ID, 232011 when the bot is not in the chat, 232015 for an
// unknown member_id_type, 232001 for a bad page_size or page_token.
func (e *Emulator) handleGetChatMembers(w http.ResponseWriter, r *http.Request, _ string) {
	id := r.PathValue("chat_id")
	q := r.URL.Query()
	idType, ok := userIDType(q.Get("member_id_type"))
	if !ok {
		e.fail(w, codeChatIDTypeInvalid, msgChatIDTypeInvalid)
		return
	}
	size, ok := parsePageSize(q.Get("page_size"), membersPageSize, membersMaxPageSize)
	if !ok {
		e.fail(w, codeChatBadParam, msgChatBadParam+" ext=page_size must be a number from 1 to 100")
		return
	}
	if !strings.HasPrefix(id, "oc_") {
		e.fail(w, codeChatInvalidID, msgChatInvalidID)
		return
	}
	e.mu.Lock()
	c := e.chatForLocked(id)
	out := e.botOut[id]
	e.mu.Unlock()
	if out {
		e.fail(w, codeChatOperatorOut, msgChatOperatorOut)
		return
	}
	off, ok := parsePageToken(q.Get("page_token"), len(c.Members))
	if !ok {
		e.fail(w, codeChatBadParam, msgChatBadParam+" ext=invalid page_token")
		return
	}
	members := make([]memberData, len(c.Members))
	for i, m := range c.Members {
		tk := m.TenantKey
		if tk == "" {
			tk = e.tenantKey
		}
		members[i] = memberData{MemberIDType: idType, MemberID: userIDOf(m.OpenID, idType), Name: m.Name, TenantKey: tk}
	}
	page, next := paginate(members, off, size)
	writeJSON(w, http.StatusOK, e.newLogID(), envelope{Code: codeOK, Msg: "success", Data: struct {
		Items       []memberData `json:"items"`
		PageToken   string       `json:"page_token,omitempty"`
		HasMore     bool         `json:"has_more"`
		MemberTotal int          `json:"member_total"`
	}{page, next, next != "", len(c.Members)}})
}
