package envelope

import (
	"encoding/json"
	"fmt"
	"sync"

	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// Body is a plaintext Lark body decoded once for both authentication
// (url_verification, the verification token) and normalization, which ran
// as separate decodes of the same bytes and were most of ingest's CPU.
type Body struct {
	appID string
	raw   []byte
	fast  bool
	b     bodyJSON  // fast path: everything
	probe Probe     // slow path: what authentication reads
	ev    eventJSON // b.Event's storage on the fast path
}

// bodyPool recycles Bodies: the decoded union structs are about 1 KB per
// webhook, a sixth of ingest's garbage.
var bodyPool = sync.Pool{New: func() any { return new(Body) }}

// Release hands p back for reuse. Neither p nor anything but the Events it
// returned may be used afterwards (Events share no memory with p).
func (p *Body) Release() {
	*p = Body{}
	bodyPool.Put(p)
}

// Parse decodes raw, a plaintext body posted for app. An error means raw is
// not a JSON object whose routing fields (type, challenge, token, schema,
// encrypt, header.token) have Lark's types. Body keeps raw: the Event's
// RawJson is raw itself.
func Parse(appID string, raw []byte) (*Body, error) {
	p := bodyPool.Get().(*Body)
	p.appID, p.raw = appID, raw
	p.b.spare = &p.ev
	if decodeBody(raw, &p.b) {
		p.fast = true
		return p, nil
	}
	// Slow path, as before the single pass: encoding/json decides what is
	// JSON (the fast decoder may be more lenient, but is never stricter),
	// the multi-pass normalizer what is an event.
	p.b = bodyJSON{}
	if err := json.Unmarshal(raw, &p.probe); err != nil {
		return nil, fmt.Errorf("decoding body: %w", err)
	}
	return p, nil
}

// IsChallenge reports a url_verification request.
func (p *Body) IsChallenge() bool { return p.kind() == "url_verification" }

func (p *Body) kind() string {
	if p.fast {
		return p.b.Type
	}
	return p.probe.Type
}

// Challenge is url_verification's value to echo.
func (p *Body) Challenge() string {
	if p.fast {
		return p.b.Challenge
	}
	return p.probe.Challenge
}

// Encrypted is the body's "encrypt" field: set only if the body is Lark's
// encrypted wrapper rather than plaintext.
func (p *Body) Encrypted() string {
	if p.fast {
		return p.b.Encrypt
	}
	return p.probe.Encrypt
}

// VerificationToken returns the token the body carries (2.0 header.token,
// else 1.0 top-level token).
func (p *Body) VerificationToken() string {
	if !p.fast {
		return p.probe.VerificationToken()
	}
	if p.b.Header != nil {
		return p.b.Header.Token
	}
	return p.b.Token
}

// Event normalizes the body, as Normalize does. Call it only after
// authenticating the body.
func (p *Body) Event() (*pluginv1.Event, error) {
	if p.fast {
		return p.b.normalize(p.appID, p.raw)
	}
	return normalizeSlow(p.appID, p.raw)
}
