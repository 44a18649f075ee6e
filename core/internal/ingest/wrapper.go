package ingest

import "sync"

// encryptField returns the value of "encrypt" if body is exactly Lark's
// wrapper, {"encrypt":"..."} (whitespace allowed between tokens), and
// ok=false for anything else, which then gets a full JSON decode. It is
// hand-written because a JSON library copies the input and decodes the
// ~1.5 KB string into a new one; this is one allocation-free pass. It
// accepts only strings encoding/json reads as the same bytes (printable
// ASCII without escapes, the key's exact spelling); other ASCII outside
// the base64 alphabet is left to the base64 decoder, which rejects it as
// it did after encoding/json.
func encryptField(body []byte) (enc []byte, ok bool) {
	const key = `"encrypt"`
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return nil, false
	}
	i = skipSpace(body, i+1)
	if len(body)-i < len(key) || string(body[i:i+len(key)]) != key {
		return nil, false
	}
	i = skipSpace(body, i+len(key))
	if i >= len(body) || body[i] != ':' {
		return nil, false
	}
	i = skipSpace(body, i+1)
	if i >= len(body) || body[i] != '"' {
		return nil, false
	}
	start := i + 1
	for i = start; i < len(body); i++ {
		c := body[i]
		if c == '"' {
			break
		}
		if c < 0x20 || c == '\\' || c >= 0x80 {
			return nil, false
		}
	}
	if i >= len(body) {
		return nil, false
	}
	enc = body[start:i]
	i = skipSpace(body, i+1)
	if i >= len(body) || body[i] != '}' {
		return nil, false
	}
	if skipSpace(body, i+1) != len(body) {
		return nil, false
	}
	return enc, true
}

// skipSpace skips JSON whitespace from i.
func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// reqBuf is one request's body, plaintext, signing scratch and encoded
// event. They are most of the handler's garbage at webhook rates, so they
// are pooled.
type reqBuf struct {
	body, plain, scratch, enc []byte
}

// maxPooledBuf keeps a rare huge body from pinning its buffer in the pool.
const maxPooledBuf = 64 << 10

var bufPool = sync.Pool{New: func() any { return new(reqBuf) }}

func getBuf() *reqBuf { return bufPool.Get().(*reqBuf) }

// putBuf returns rb to the pool: only once nothing references its bytes
// (an Event's RawJson is a slice of body or plain).
func putBuf(rb *reqBuf) {
	if cap(rb.body) > maxPooledBuf || cap(rb.plain) > maxPooledBuf || cap(rb.scratch) > maxPooledBuf || cap(rb.enc) > maxPooledBuf {
		return
	}
	bufPool.Put(rb)
}
