package bench

import (
	"bytes"
	"crypto/rand"
	"embed"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/larkway/larkway/core/internal/ingest"
)

// The golden payloads' message events (copies of
// core/internal/envelope/testdata, kept in step by TestGoldenCopies): every
// event the bench posts is one of these with fresh ids.
//
//go:embed golden/*.json
var golden embed.FS

// GoldenMessages names the golden inputs the generator cycles through.
var GoldenMessages = []string{"message_text_group", "message_text_p2p", "message_post", "message_image"}

// placeholders substituted per event.
const (
	phEventID    = "@@EVENT_ID@@"
	phMessageID  = "@@MESSAGE_ID@@"
	phChatID     = "@@CHAT_ID@@"
	phCreateTime = "@@CREATE_TIME@@"
)

// template is a golden payload split at its placeholders.
type template struct {
	parts [][]byte // literal, placeholder name, literal, ...
}

// App is the Lark app the generated events are for.
type App struct {
	ID                string
	VerificationToken string
	EncryptKey        string
}

// Source makes unique, realistic Lark message events for one app from the
// golden payloads, and seals them as Lark sends them: encrypted with the
// app's Encrypt Key and signed. It is safe for concurrent use.
type Source struct {
	app       App
	run       string
	chats     int
	templates []template
	seq       atomic.Uint64
}

// Event is one generated event: Key is its message_id (its dedup key, and
// the parent_id of the reply to it), EventID its header's event_id, Plain
// its JSON before sealing.
type Event struct {
	Key, EventID string
	Plain        []byte
}

// NewSource returns a source whose events spread over chats chats. run makes
// ids unique across runs against one long-lived core.
func NewSource(app App, run string, chats int) (*Source, error) {
	s := &Source{app: app, run: run, chats: max(chats, 1)}
	for _, name := range GoldenMessages {
		raw, err := golden.ReadFile("golden/" + name + ".json")
		if err != nil {
			return nil, err
		}
		t, err := makeTemplate(raw, app)
		if err != nil {
			return nil, fmt.Errorf("golden payload %s: %w", name, err)
		}
		s.templates = append(s.templates, t)
	}
	return s, nil
}

// makeTemplate sets the app's id and token and puts placeholders where each
// event needs its own values.
func makeTemplate(raw []byte, app App) (template, error) {
	var ev map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&ev); err != nil {
		return template{}, err
	}
	header, _ := ev["header"].(map[string]any)
	body, _ := ev["event"].(map[string]any)
	msg, _ := body["message"].(map[string]any)
	if header == nil || msg == nil {
		return template{}, fmt.Errorf("not a 2.0 message event")
	}
	header["event_id"], header["create_time"] = phEventID, phCreateTime
	header["app_id"], header["token"] = app.ID, app.VerificationToken
	msg["message_id"], msg["chat_id"] = phMessageID, phChatID
	b, err := json.Marshal(ev)
	if err != nil {
		return template{}, err
	}
	var t template
	for len(b) > 0 {
		i := bytes.Index(b, []byte("@@"))
		if i < 0 {
			t.parts = append(t.parts, b)
			break
		}
		j := bytes.Index(b[i+2:], []byte("@@"))
		if j < 0 {
			return template{}, fmt.Errorf("unterminated placeholder")
		}
		t.parts = append(t.parts, b[:i], b[i:i+2+j+2])
		b = b[i+2+j+2:]
	}
	return t, nil
}

// Next returns a new event.
func (s *Source) Next() Event {
	n := s.seq.Add(1)
	t := s.templates[int(n)%len(s.templates)]
	id := s.run + strconv.FormatUint(n, 36)
	key, eventID := "om_bench_"+id, "ev_bench_"+id
	vals := map[string]string{
		phEventID: eventID, phMessageID: key,
		phChatID:     "oc_bench_" + strconv.Itoa(int(n)%s.chats),
		phCreateTime: strconv.FormatInt(time.Now().UnixMilli(), 10),
	}
	out := make([]byte, 0, 1024)
	for _, p := range t.parts {
		if v, ok := vals[string(p)]; ok {
			out = append(out, v...)
		} else {
			out = append(out, p...)
		}
	}
	return Event{Key: key, EventID: eventID, Plain: out}
}

// Count is the number of events made so far.
func (s *Source) Count() uint64 { return s.seq.Load() }

var nonceSeq atomic.Uint64

// Seal encrypts plain with the app's Encrypt Key under a fresh IV and signs
// it with a fresh timestamp and nonce: the body and headers Lark posts. A
// retry of one event is sealed again, as Lark's re-push is.
func Seal(app App, plain []byte) ([]byte, http.Header, error) {
	h := http.Header{}
	h["Content-Type"] = []string{"application/json"}
	if app.EncryptKey == "" {
		return plain, h, nil
	}
	var iv [16]byte
	_, _ = rand.Read(iv[:])
	enc, err := ingest.Encrypt(plain, app.EncryptKey, iv[:])
	if err != nil {
		return nil, nil, err
	}
	body := make([]byte, 0, len(enc)+16)
	body = append(append(append(body, `{"encrypt":"`...), enc...), `"}`...)
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	nonce := strconv.FormatUint(nonceSeq.Add(1), 36) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	// Canonical keys set directly: the SDK reads the map without
	// canonicalizing.
	h[ingest.HeaderTimestamp] = []string{ts}
	h[ingest.HeaderNonce] = []string{nonce}
	h[ingest.HeaderSignature] = []string{ingest.EventSignature(ts, nonce, app.EncryptKey, body)}
	return body, h, nil
}
