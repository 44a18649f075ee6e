package envelope

import (
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"encoding/json"
)

// scanner decodes Lark bodies (bodyJSON) and message contents (contentJSON)
// in one pass. It is hand-written because the libraries, even goccy, spent
// more time on these ~1 KB bodies than verifying and decrypting them did.
//
// It accepts only what it is sure to read as encoding/json would, and
// declines everything else, which then takes the library path (whose
// answers are the reference): invalid JSON, a value of the wrong type, a
// known key given twice, any key with an escape, an upper-case or
// non-ASCII byte (encoding/json matches keys case-insensitively), nesting
// deeper than maxScanDepth. Callers check UTF-8 validity first.
//
// Strings without escapes are substrings of s: decode the input as one
// string copy, and no string aliases the caller's bytes.
type scanner struct {
	s     string
	i     int
	depth int
}

const maxScanDepth = 256

// scanBody decodes raw into b; false means "not sure": use the library.
func scanBody(raw []byte, b *bodyJSON) bool {
	d := scanner{s: string(raw)}
	return d.top(func() bool { return d.body(b) })
}

// scanContent decodes a message's content JSON into c, as scanBody does.
func scanContent(s string, c *contentJSON) bool {
	d := scanner{s: s}
	return d.top(func() bool { return d.content(c) })
}

// top reads one object with obj, then only whitespace.
func (d *scanner) top(obj func() bool) bool {
	d.ws()
	if !d.is('{') || !obj() {
		return false
	}
	d.ws()
	return d.i == len(d.s)
}

func (d *scanner) ws() {
	for d.i < len(d.s) {
		switch d.s[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *scanner) is(c byte) bool { return d.i < len(d.s) && d.s[d.i] == c }

// object reads {...} calling field for each key, positioned at its value;
// field must consume the value. seen guards against repeated known keys:
// field calls once(bit) for those.
func (d *scanner) object(field func(key string) bool) bool {
	if !d.is('{') {
		return false
	}
	if d.depth++; d.depth > maxScanDepth {
		return false
	}
	d.i++
	d.ws()
	if d.is('}') {
		d.i++
		d.depth--
		return true
	}
	for {
		key, ok := d.key()
		if !ok {
			return false
		}
		d.ws()
		if !d.is(':') {
			return false
		}
		d.i++
		d.ws()
		if !field(key) {
			return false
		}
		d.ws()
		switch {
		case d.is(','):
			d.i++
			d.ws()
		case d.is('}'):
			d.i++
			d.depth--
			return true
		default:
			return false
		}
	}
}

// key reads an object key of plain lower-case ASCII (and digits,
// punctuation), the only keys this scanner matches exactly as
// encoding/json does.
func (d *scanner) key() (string, bool) {
	if !d.is('"') {
		return "", false
	}
	start := d.i + 1
	for i := start; i < len(d.s); i++ {
		switch c := d.s[i]; {
		case c == '"':
			d.i = i + 1
			return d.s[start:i], true
		case c < 0x20 || c == '\\' || c >= 0x80 || c >= 'A' && c <= 'Z':
			return "", false
		}
	}
	return "", false
}

// once marks bit in seen, failing if it was already set.
func once(seen *uint64, bit uint) bool {
	if *seen&(1<<bit) != 0 {
		return false
	}
	*seen |= 1 << bit
	return true
}

// null consumes a null literal if one is next.
func (d *scanner) null() bool {
	if len(d.s)-d.i >= 4 && d.s[d.i:d.i+4] == "null" {
		d.i += 4
		return true
	}
	return false
}

// str reads a string value into dst; null leaves dst alone.
func (d *scanner) str(dst *string) bool {
	if d.null() {
		return true
	}
	s, ok := d.stringValue()
	*dst = s
	return ok
}

// stringValue reads a JSON string.
func (d *scanner) stringValue() (string, bool) {
	if !d.is('"') {
		return "", false
	}
	start := d.i + 1
	for i := start; i < len(d.s); i++ {
		switch c := d.s[i]; {
		case c == '"':
			d.i = i + 1
			return d.s[start:i], true
		case c == '\\':
			return d.unescape(start, i)
		case c < 0x20:
			return "", false
		}
	}
	return "", false
}

// unescape finishes a string from its first escape at i, as encoding/json
// unquotes (invalid surrogates become U+FFFD).
func (d *scanner) unescape(start, i int) (string, bool) {
	b := make([]byte, 0, len(d.s)-start)
	b = append(b, d.s[start:i]...)
	for i < len(d.s) {
		c := d.s[i]
		switch {
		case c == '"':
			d.i = i + 1
			return string(b), true
		case c < 0x20:
			return "", false
		case c != '\\':
			b = append(b, c)
			i++
			continue
		}
		if i+1 >= len(d.s) {
			return "", false
		}
		switch e := d.s[i+1]; e {
		case '"', '\\', '/':
			b = append(b, e)
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			r := hex4(d.s, i+2)
			if r < 0 {
				return "", false
			}
			i += 6
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if i+1 < len(d.s) && d.s[i] == '\\' && d.s[i+1] == 'u' {
					r2 = hex4(d.s, i+2)
				}
				if dec := utf16.DecodeRune(r, r2); dec != unicode.ReplacementChar {
					i += 6
					r = dec
				} else {
					r = unicode.ReplacementChar
				}
			}
			b = utf8.AppendRune(b, r)
			continue
		default:
			return "", false
		}
		i += 2
	}
	return "", false
}

// hex4 reads 4 hex digits at s[i:], or -1.
func hex4(s string, i int) rune {
	if i+4 > len(s) {
		return -1
	}
	var r rune
	for _, c := range []byte(s[i : i+4]) {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

// raw skips a value, returning its text (json.RawMessage's bytes).
func (d *scanner) raw() (string, bool) {
	start := d.i
	if !d.skip() {
		return "", false
	}
	return d.s[start:d.i], true
}

// skip validates and skips any value.
func (d *scanner) skip() bool {
	if d.i >= len(d.s) {
		return false
	}
	switch c := d.s[d.i]; {
	case c == '{':
		return d.object(func(string) bool { return d.skip() })
	case c == '[':
		return d.array(d.skip)
	case c == '"':
		_, ok := d.stringValue()
		return ok
	case c == 't':
		return d.literal("true")
	case c == 'f':
		return d.literal("false")
	case c == 'n':
		return d.literal("null")
	default:
		return d.number()
	}
}

func (d *scanner) literal(lit string) bool {
	if len(d.s)-d.i >= len(lit) && d.s[d.i:d.i+len(lit)] == lit {
		d.i += len(lit)
		return true
	}
	return false
}

// number skips a number in JSON's grammar.
func (d *scanner) number() bool {
	s, i := d.s, d.i
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i] >= '1' && s[i] <= '9':
		i = digits(s, i)
	default:
		return false
	}
	if i < len(s) && s[i] == '.' {
		j := digits(s, i+1)
		if j == i+1 {
			return false
		}
		i = j
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		j := digits(s, i)
		if j == i {
			return false
		}
		i = j
	}
	d.i = i
	return true
}

func digits(s string, i int) int {
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return i
}

// array reads [...] calling elem for each element.
func (d *scanner) array(elem func() bool) bool {
	if !d.is('[') {
		return false
	}
	if d.depth++; d.depth > maxScanDepth {
		return false
	}
	d.i++
	d.ws()
	if d.is(']') {
		d.i++
		d.depth--
		return true
	}
	for {
		if !elem() {
			return false
		}
		d.ws()
		switch {
		case d.is(','):
			d.i++
			d.ws()
		case d.is(']'):
			d.i++
			d.depth--
			return true
		default:
			return false
		}
	}
}

// obj reads an object into a struct field (null leaves it alone).
func (d *scanner) obj(field func(key string) bool) bool {
	return d.null() || d.object(field)
}

func (d *scanner) body(b *bodyJSON) bool {
	var seen uint64
	return d.object(func(k string) bool {
		switch k {
		case "encrypt":
			return once(&seen, 0) && d.str(&b.Encrypt)
		case "type":
			return once(&seen, 1) && d.str(&b.Type)
		case "challenge":
			return once(&seen, 2) && d.str(&b.Challenge)
		case "token":
			return once(&seen, 3) && d.str(&b.Token)
		case "schema":
			return once(&seen, 4) && d.str(&b.Schema)
		case "uuid":
			return once(&seen, 5) && d.str(&b.UUID)
		case "ts":
			return once(&seen, 6) && d.str(&b.TS)
		case "header":
			if !once(&seen, 7) {
				return false
			}
			if d.null() {
				return true
			}
			b.Header = &tokenHeaderJSON{}
			return d.header(b.Header)
		case "event":
			if !once(&seen, 8) {
				return false
			}
			if d.null() {
				return true
			}
			b.Event = b.newEvent()
			return d.event(b.Event)
		}
		return d.skip()
	})
}

func (d *scanner) header(h *tokenHeaderJSON) bool {
	var seen uint64
	return d.object(func(k string) bool {
		switch k {
		case "event_id":
			return once(&seen, 0) && d.str(&h.EventID)
		case "event_type":
			return once(&seen, 1) && d.str(&h.EventType)
		case "create_time":
			return once(&seen, 2) && d.str(&h.CreateTime)
		case "tenant_key":
			return once(&seen, 3) && d.str(&h.TenantKey)
		case "app_id":
			return once(&seen, 4) && d.str(&h.AppID)
		case "token":
			return once(&seen, 5) && d.str(&h.Token)
		}
		return d.skip()
	})
}

func (d *scanner) event(e *eventJSON) bool {
	var seen uint64
	return d.object(func(k string) bool {
		switch k {
		case "type":
			return once(&seen, 0) && d.str(&e.Type)
		case "app_id":
			return once(&seen, 1) && d.str(&e.AppID)
		case "tenant_key":
			return once(&seen, 2) && d.str(&e.TenantKey)
		case "open_id":
			return once(&seen, 3) && d.str(&e.OpenID)
		case "user_open_id":
			return once(&seen, 4) && d.str(&e.UserOpenID)
		case "employee_id":
			return once(&seen, 5) && d.str(&e.EmployeeID)
		case "union_id":
			return once(&seen, 6) && d.str(&e.UnionID)
		case "open_chat_id":
			return once(&seen, 7) && d.str(&e.OpenChatID)
		case "chat_id":
			return once(&seen, 8) && d.str(&e.ChatID)
		case "open_message_id":
			return once(&seen, 9) && d.str(&e.OpenMessageID)
		case "chat_type":
			return once(&seen, 10) && d.str(&e.ChatType)
		case "msg_type":
			return once(&seen, 11) && d.str(&e.MsgType)
		case "text":
			return once(&seen, 12) && d.str(&e.Text)
		case "text_without_at_bot":
			return once(&seen, 13) && d.str(&e.TextNoAt)
		case "image_key":
			return once(&seen, 14) && d.str(&e.ImageKey)
		case "file_key":
			return once(&seen, 15) && d.str(&e.FileKey)
		case "parent_id":
			return once(&seen, 16) && d.str(&e.ParentID)
		case "root_id":
			return once(&seen, 17) && d.str(&e.RootID)
		case "sender":
			return once(&seen, 18) && d.sender(&e.Sender)
		case "message":
			return once(&seen, 19) && d.message(&e.Message)
		case "operator":
			if !once(&seen, 20) {
				return false
			}
			if d.null() {
				return true
			}
			e.Operator = &operatorJSON{}
			return d.operator(e.Operator)
		case "token":
			return once(&seen, 21) && d.str(&e.Token)
		case "action":
			return once(&seen, 22) && d.action(&e.Action)
		case "context":
			return once(&seen, 23) && d.cardContext(&e.Context)
		case "operator_id":
			return once(&seen, 24) && d.userIDsPtr(&e.OperatorID)
		case "user_id":
			return once(&seen, 25) && d.userIDsPtr(&e.UserID)
		}
		return d.skip()
	})
}

// userIDs reads a user id object.
func (d *scanner) userIDs(u *userIDs) bool {
	var seen uint64
	return d.obj(func(k string) bool { return d.userIDField(k, u, &seen, 0) })
}

// userIDField reads one of a user id's keys (bits base..base+2 of seen).
func (d *scanner) userIDField(k string, u *userIDs, seen *uint64, base uint) bool {
	switch k {
	case "open_id":
		return once(seen, base) && d.str(&u.OpenID)
	case "user_id":
		return once(seen, base+1) && d.str(&u.UserID)
	case "union_id":
		return once(seen, base+2) && d.str(&u.UnionID)
	}
	return d.skip()
}

func (d *scanner) userIDsPtr(p **userIDs) bool {
	if d.null() {
		return true
	}
	*p = &userIDs{}
	return d.userIDs(*p)
}

func (d *scanner) operator(o *operatorJSON) bool {
	var seen uint64
	return d.object(func(k string) bool {
		if k == "operator_id" {
			return once(&seen, 3) && d.userIDsPtr(&o.OperatorID)
		}
		return d.userIDField(k, &o.userIDs, &seen, 0)
	})
}

func (d *scanner) sender(s *senderJSON) bool {
	var seen uint64
	return d.obj(func(k string) bool {
		switch k {
		case "sender_id":
			return once(&seen, 0) && d.userIDs(&s.SenderID)
		case "sender_type":
			return once(&seen, 1) && d.str(&s.SenderType)
		}
		return d.skip()
	})
}

func (d *scanner) message(m *messageJSON) bool {
	var seen uint64
	return d.obj(func(k string) bool {
		switch k {
		case "message_id":
			return once(&seen, 0) && d.str(&m.MessageID)
		case "root_id":
			return once(&seen, 1) && d.str(&m.RootID)
		case "parent_id":
			return once(&seen, 2) && d.str(&m.ParentID)
		case "thread_id":
			return once(&seen, 3) && d.str(&m.ThreadID)
		case "chat_id":
			return once(&seen, 4) && d.str(&m.ChatID)
		case "chat_type":
			return once(&seen, 5) && d.str(&m.ChatType)
		case "message_type":
			return once(&seen, 6) && d.str(&m.MessageType)
		case "content":
			return once(&seen, 7) && d.str(&m.Content)
		case "mentions":
			if !once(&seen, 8) {
				return false
			}
			if d.null() {
				return true
			}
			m.Mentions = []mentionJSON{} // [] is an empty, non-nil slice
			return d.array(func() bool {
				m.Mentions = append(m.Mentions, mentionJSON{})
				return d.mention(&m.Mentions[len(m.Mentions)-1])
			})
		}
		return d.skip()
	})
}

func (d *scanner) mention(mn *mentionJSON) bool {
	var seen uint64
	return d.obj(func(k string) bool {
		switch k {
		case "key":
			return once(&seen, 0) && d.str(&mn.Key)
		case "id":
			return once(&seen, 1) && d.userIDs(&mn.ID)
		case "name":
			return once(&seen, 2) && d.str(&mn.Name)
		}
		return d.skip()
	})
}

func (d *scanner) action(a *cardActionJSON) bool {
	var seen uint64
	return d.obj(func(k string) bool {
		switch k {
		case "value":
			return once(&seen, 0) && d.rawField(&a.Value)
		case "tag":
			return once(&seen, 1) && d.str(&a.Tag)
		case "option":
			return once(&seen, 2) && d.str(&a.Option)
		case "timezone":
			return once(&seen, 3) && d.str(&a.Timezone)
		case "name":
			return once(&seen, 4) && d.str(&a.Name)
		case "form_value":
			return once(&seen, 5) && d.rawField(&a.FormValue)
		case "input_value":
			return once(&seen, 6) && d.str(&a.InputValue)
		}
		return d.skip()
	})
}

// rawField reads a json.RawMessage field (its bytes copied, as the
// libraries do, though only rawString ever reads them).
func (d *scanner) rawField(dst *json.RawMessage) bool {
	r, ok := d.raw()
	*dst = json.RawMessage(r)
	return ok
}

func (d *scanner) cardContext(c *cardContextJSON) bool {
	var seen uint64
	return d.obj(func(k string) bool {
		switch k {
		case "open_message_id":
			return once(&seen, 0) && d.str(&c.OpenMessageID)
		case "open_chat_id":
			return once(&seen, 1) && d.str(&c.OpenChatID)
		}
		return d.skip()
	})
}

func (d *scanner) content(c *contentJSON) bool {
	var seen uint64
	return d.object(func(k string) bool {
		switch k {
		case "text":
			return once(&seen, 0) && d.str(&c.Text)
		case "title":
			return once(&seen, 1) && d.str(&c.Title)
		case "image_key":
			return once(&seen, 2) && d.str(&c.ImageKey)
		case "file_key":
			return once(&seen, 3) && d.str(&c.FileKey)
		case "content":
			if !once(&seen, 4) {
				return false
			}
			if d.null() {
				return true
			}
			c.Content = [][]postElement{}
			return d.array(func() bool {
				if d.null() {
					c.Content = append(c.Content, nil)
					return true
				}
				var para []postElement
				ok := d.array(func() bool {
					para = append(para, postElement{})
					return d.postElement(&para[len(para)-1])
				})
				if para == nil {
					para = []postElement{}
				}
				c.Content = append(c.Content, para)
				return ok
			})
		}
		return d.skip()
	})
}

func (d *scanner) postElement(e *postElement) bool {
	var seen uint64
	return d.obj(func(k string) bool {
		switch k {
		case "tag":
			return once(&seen, 0) && d.str(&e.Tag)
		case "text":
			return once(&seen, 1) && d.str(&e.Text)
		case "user_id":
			return once(&seen, 2) && d.str(&e.UserID)
		case "user_name":
			return once(&seen, 3) && d.str(&e.UserName)
		case "href":
			return once(&seen, 4) && d.str(&e.Href)
		}
		return d.skip()
	})
}
