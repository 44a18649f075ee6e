package ingest

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/larkway/larkway/core/internal/callback"
)

// oracleApp has everything the attack needs: an encrypt key and the legacy
// card URL configured.
var oracleApp = App{ID: "cli_test", VerificationToken: "vt", EncryptKey: testKey, EventPath: "/lark/events", CardPath: "/lark/cards"}

// liveIngest serves oracleApp over loopback HTTP, as Lark (or an attacker)
// reaches it, and returns its URL, publisher and metrics registry.
func liveIngest(t *testing.T) (string, *answeringPublisher, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	pub := &answeringPublisher{hub: callback.NewMemory()}
	s := New(Config{Apps: []App{oracleApp}, MaxBodyBytes: 1 << 20, PublishTimeout: time.Second, Callbacks: pub.hub,
		CardBudget: 50 * time.Millisecond, Now: func() time.Time { return testNow }}, pub, slog.New(slog.DiscardHandler), reg)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return srv.URL, pub, reg
}

// answer is what a client can observe of a response, the Date header aside.
type answer struct {
	status int
	header http.Header
	body   string
}

func (a answer) String() string { return fmt.Sprintf("%d %v %q", a.status, a.header, a.body) }

func (a answer) equal(b answer) bool {
	return a.status == b.status && a.body == b.body && fmt.Sprint(a.header) == fmt.Sprint(b.header)
}

func post(t *testing.T, url, body string, h http.Header) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	resp.Header.Del("Date")
	return answer{resp.StatusCode, resp.Header, string(b)}
}

// rejectionReasons sums larkway_ingest_rejections_total by reason, leaving
// out series still at zero.
func rejectionReasons(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != "larkway_ingest_rejections_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			if v := m.GetCounter().GetValue(); v > 0 {
				out[label(m, "reason")] += v
			}
		}
	}
	return out
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// ivProbes are the CBC padding-oracle attack's requests: the encrypted
// body's IV and first block, with the IV's last byte set to each of its 256
// values. Decrypting IV'‖C1 yields D(C1) XOR IV', so the byte decides the
// last plaintext byte: one value (sometimes a few) pads correctly, the
// rest do not. An answer that differs between the two is the oracle. It
// also reports how many pad correctly, so the test can show it exercised
// both outcomes.
func ivProbes(t *testing.T, plain string) (bodies []string, validPadding int) {
	t.Helper()
	enc, err := Encrypt([]byte(plain), testKey, []byte("0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		t.Fatal(err)
	}
	for b := range 256 {
		probe := bytes.Clone(raw[:32])
		probe[15] = byte(b)
		e := base64.StdEncoding.EncodeToString(probe)
		if _, err := Decrypt(e, testKey); err == nil {
			validPadding++
		}
		bodies = append(bodies, fmt.Sprintf(`{"encrypt":%q}`, e))
	}
	return bodies, validPadding
}

// fullIVProbes vary the same IV byte on the whole ciphertext of a
// url_verification carrying a guessed token: every probe pads correctly, but
// the first block's JSON breaks on all values but the original, which
// parses and fails on the token. JSON versus token must not show either.
func fullIVProbes(t *testing.T) []string {
	t.Helper()
	enc, err := Encrypt([]byte(`{"challenge":"c","token":"guess","type":"url_verification"}`), testKey, []byte("0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(enc)
	var bodies []string
	for b := range 256 {
		probe := bytes.Clone(raw)
		probe[15] = byte(b)
		bodies = append(bodies, fmt.Sprintf(`{"encrypt":%q}`, base64.StdEncoding.EncodeToString(probe)))
	}
	return bodies
}

// The attack that recovered the verification token, replayed over HTTP: 256
// unsigned probes per family, varying the IV's last byte of a real
// encrypted url_verification, must all get one identical answer on the
// event path and on the card path, counted under one rejection reason.
func TestNoPaddingOracle(t *testing.T) {
	url, pub, reg := liveIngest(t)
	padding, valid := ivProbes(t, `{"challenge":"c","token":"vt","type":"url_verification"}`)
	if valid == 0 || valid == len(padding) {
		t.Fatalf("%d of %d probes pad correctly: the probes must exercise both padding outcomes", valid, len(padding))
	}
	families := map[string][]string{"padding": padding, "json versus token": fullIVProbes(t)}
	var first *answer
	sent := 0
	for _, path := range []string{oracleApp.EventPath, oracleApp.CardPath} {
		for name, bodies := range families {
			for i, body := range bodies {
				got := post(t, url+path, body, nil)
				sent++
				if first == nil {
					first = &got
					continue
				}
				if !got.equal(*first) {
					t.Fatalf("%s, %s probe %d answered\n  %v\nbut the first probe\n  %v", path, name, i, got, *first)
				}
			}
		}
	}
	if first.status != http.StatusUnauthorized || first.body != string(unauthenticatedBody) ||
		first.header.Get("Content-Length") != strconv.Itoa(len(unauthenticatedBody)) {
		t.Fatalf("the uniform answer is %v", *first)
	}
	if reasons := rejectionReasons(t, reg); len(reasons) != 1 || reasons[reasonUnauthenticated] != float64(sent) {
		t.Fatalf("rejections by reason %v, want only %s = %d", reasons, reasonUnauthenticated, sent)
	}
	if n := pub.stored(); n != 0 {
		t.Fatalf("%d probes were stored", n)
	}
}

// Every way an unsigned request can fail looks the same from outside, and
// the one that may pass, the encrypted challenge, still does.
func TestUnsignedFailuresAreUniform(t *testing.T) {
	url, _, reg := liveIngest(t)
	seal := func(plain string) string {
		enc, err := Encrypt([]byte(plain), testKey, []byte("fedcba9876543210"))
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf(`{"encrypt":%q}`, enc)
	}
	challenge := `{"challenge":"c7","token":"vt","type":"url_verification"}`
	tests := []struct {
		name string
		body string
		h    http.Header
	}{
		{"not json", `<xml/>`, nil},
		{"empty", ``, nil},
		{"plaintext challenge with a guessed token", `{"challenge":"c7","token":"guess","type":"url_verification"}`, nil},
		{"not base64", `{"encrypt":"!!!!"}`, nil},
		{"too short", `{"encrypt":"AAAA"}`, nil},
		{"bad padding", `{"encrypt":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`, nil},
		{"decrypts to non-json", seal(`hello`), nil},
		{"wrong token", seal(`{"challenge":"c7","token":"guess","type":"url_verification"}`), nil},
		{"not url_verification", seal(messageEvent("vt")), nil},
		{"legacy click unsigned", seal(legacyCard), nil},
		{"timestamp and nonce but no signature", seal(messageEvent("vt")),
			http.Header{HeaderTimestamp: {strconv.FormatInt(testNow.Unix(), 10)}, HeaderNonce: {"n"}}},
	}
	want := answer{}
	for _, path := range []string{oracleApp.EventPath, oracleApp.CardPath} {
		for _, tt := range tests {
			t.Run(path+"/"+tt.name, func(t *testing.T) {
				got := post(t, url+path, tt.body, tt.h)
				if want.status == 0 {
					want = got
				}
				if !got.equal(want) || got.status != http.StatusUnauthorized || got.body != string(unauthenticatedBody) {
					t.Fatalf("answered %v, want the uniform %v", got, want)
				}
			})
		}
		t.Run(path+"/encrypted challenge passes", func(t *testing.T) {
			if got := post(t, url+path, seal(challenge), nil); got.status != 200 || got.body != `{"challenge":"c7"}`+"\n" {
				t.Fatalf("challenge answered %v", got)
			}
		})
	}
	if reasons := rejectionReasons(t, reg); len(reasons) != 1 || reasons[reasonUnauthenticated] != float64(2*len(tests)) {
		t.Fatalf("rejections by reason %v, want only %s", reasons, reasonUnauthenticated)
	}
}

// A signed request is authenticated on its raw bytes before anything is
// decrypted: a correctly signed encrypted event or legacy card is stored,
// and a tampered one is refused as bad_signature even when its ciphertext
// would not decrypt (bad padding) or its body is not JSON — had either been
// decrypted or parsed first, the reason would be undecryptable or not_json.
func TestSignedBeforeDecrypt(t *testing.T) {
	url, pub, reg := liveIngest(t)
	signEvent := func(body, nonce string) http.Header {
		ts := strconv.FormatInt(testNow.Unix(), 10)
		return http.Header{HeaderTimestamp: {ts}, HeaderNonce: {nonce}, HeaderSignature: {EventSignature(ts, nonce, testKey, []byte(body))}}
	}
	signCard := func(body, nonce string) http.Header {
		ts := strconv.FormatInt(testNow.Unix(), 10)
		return http.Header{HeaderTimestamp: {ts}, HeaderNonce: {nonce}, HeaderSignature: {CardSignature(ts, nonce, "vt", []byte(body))}}
	}
	eventBody, _ := sealed(t, messageEvent("vt"), testKey, testNow, "unused")
	cardBody, _ := sealed(t, legacyCard, testKey, testNow, "unused")

	// The tampered ciphertext: its last byte changed until it no longer
	// pads correctly, so decrypting it first would have said so.
	unpadded := func(body string) string {
		enc := strings.TrimSuffix(strings.TrimPrefix(body, `{"encrypt":"`), `"}`)
		raw, _ := base64.StdEncoding.DecodeString(enc)
		for b := range 256 {
			raw[len(raw)-17] ^= byte(b) // the second-to-last block: flips the last plaintext byte
			e := base64.StdEncoding.EncodeToString(raw)
			if _, err := Decrypt(e, testKey); err != nil {
				return `{"encrypt":"` + e + `"}`
			}
			raw[len(raw)-17] ^= byte(b)
		}
		t.Fatal("no tampering broke the padding")
		return ""
	}

	tests := []struct {
		name   string
		path   string
		body   string
		h      http.Header
		status int
		reason string
	}{
		{"signed encrypted event stored", oracleApp.EventPath, eventBody, signEvent(eventBody, "e1"), 200, ""},
		{"signed encrypted legacy card delivered", oracleApp.CardPath, cardBody, signCard(cardBody, "c1"), 200, ""},
		{"event: ciphertext tampered to bad padding", oracleApp.EventPath, unpadded(eventBody), signEvent(eventBody, "e2"), 401, "bad_signature"},
		{"event: body replaced by non-json", oracleApp.EventPath, `<xml/>`, signEvent(eventBody, "e3"), 401, "bad_signature"},
		{"event: signed with the card scheme", oracleApp.EventPath, eventBody, signCard(eventBody, "e4"), 401, "bad_signature"},
		{"card: ciphertext tampered to bad padding", oracleApp.CardPath, unpadded(cardBody), signCard(cardBody, "c2"), 401, "bad_signature"},
		{"card: body replaced by non-json", oracleApp.CardPath, `<xml/>`, signCard(cardBody, "c3"), 401, "bad_signature"},
		{"card: signed with the event scheme", oracleApp.CardPath, cardBody, signEvent(cardBody, "c4"), 401, "bad_signature"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := post(t, url+tt.path, tt.body, tt.h)
			if got.status != tt.status || (tt.reason != "" && !strings.Contains(got.body, `"reason":"`+tt.reason+`"`)) {
				t.Fatalf("answered %v, want %d %s", got, tt.status, tt.reason)
			}
		})
	}
	if reasons := rejectionReasons(t, reg); len(reasons) != 1 || reasons["bad_signature"] != 6 {
		t.Fatalf("rejections by reason %v, want only bad_signature = 6", reasons)
	}
	if n := pub.stored(); n != 2 {
		t.Fatalf("stored %d, want the signed event and the signed card", n)
	}
}

// Without card_path there is no legacy card URL at all: a correctly signed
// legacy click (what anyone holding the verification token can forge) gets
// 404 and is not stored.
func TestLegacyCardURLOnlyWhenConfigured(t *testing.T) {
	pub := &recorder{}
	s := New(Config{Apps: []App{{ID: "cli_test", VerificationToken: "vt", EncryptKey: testKey, EventPath: "/lark/events"}},
		MaxBodyBytes: 1 << 20, PublishTimeout: time.Second, Now: func() time.Time { return testNow }}, pub, slog.New(slog.DiscardHandler), nil)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, signedCard(legacyCard, "vt", testNow, "n1"))
	if rec.Code != http.StatusNotFound || len(pub.msgs) != 0 {
		t.Fatalf("legacy click without card_path: %d %s, %d stored", rec.Code, rec.Body, len(pub.msgs))
	}
}

// FuzzIngest drives the whole handler with arbitrary bodies, on both paths
// of an app with an encrypt key and of one without, unsigned, correctly
// signed, or signed wrongly; wrap encrypts the body first, so the fuzzer
// reaches what comes after decryption. It holds the authentication order:
// unsigned requests get a challenge, an event stored on the plaintext app,
// or the uniform answer; a wrong signature is always bad_signature; a
// correct one never the uniform answer; nothing but a 200 stores.
func FuzzIngest(f *testing.F) {
	challenge := `{"challenge":"c","token":"vt","type":"url_verification"}`
	for _, seed := range []struct {
		body             string
		path, mode, wrap uint8
	}{
		{challenge, 0, 0, 1}, {challenge, 1, 0, 1}, {challenge, 2, 0, 0}, {challenge, 3, 0, 0},
		{messageEvent("vt"), 0, 1, 1}, {messageEvent("vt"), 0, 0, 1}, {messageEvent("vt"), 2, 0, 0},
		{messageEvent("forged"), 2, 0, 0}, {cardEvent, 0, 1, 1}, {legacyCard, 1, 1, 1}, {legacyCard, 3, 1, 0},
		{legacyCard, 1, 2, 1}, {`{"encrypt":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`, 0, 0, 0},
		{`{"schema":"2.0","header":{"token":"vt"}}`, 2, 0, 0}, {`<xml/>`, 1, 2, 0}, {``, 0, 1, 0},
	} {
		f.Add([]byte(seed.body), seed.path, seed.mode, seed.wrap)
	}
	plainApp := App{ID: "cli_plain", VerificationToken: "vt", EventPath: "/plain/events", CardPath: "/plain/cards"}
	pub := &answeringPublisher{hub: callback.NewMemory()}
	s := New(Config{Apps: []App{oracleApp, plainApp}, MaxBodyBytes: 1 << 20, PublishTimeout: time.Second, Callbacks: pub.hub,
		CardBudget: time.Millisecond, Now: func() time.Time { return testNow }}, pub, slog.New(slog.DiscardHandler), nil)
	var nonces atomic.Int64
	f.Fuzz(func(t *testing.T, body []byte, path, mode, wrap uint8) {
		app, card := oracleApp, path%2 == 1
		if path%4 >= 2 {
			app = plainApp
		}
		if wrap%2 == 1 {
			enc, err := Encrypt(body, testKey, []byte("0123456789abcdef"))
			if err != nil {
				t.Fatal(err)
			}
			body = fmt.Appendf(nil, `{"encrypt":%q}`, enc)
		}
		url := app.EventPath
		if card {
			url = app.CardPath
		}
		req := httptest.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		signed, wrong := mode%3 != 0, mode%3 == 2
		if signed {
			ts, nonce := strconv.FormatInt(testNow.Unix(), 10), strconv.FormatInt(nonces.Add(1), 10)
			sig := EventSignature(ts, nonce, app.EncryptKey, body)
			if card {
				sig = CardSignature(ts, nonce, app.VerificationToken, body)
			}
			if wrong {
				sig = strings.Repeat("0", len(sig))
			}
			req.Header.Set(HeaderTimestamp, ts)
			req.Header.Set(HeaderNonce, nonce)
			req.Header.Set(HeaderSignature, sig)
		}
		before := pub.stored()
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		got := rec.Body.String()
		uniform := rec.Code == http.StatusUnauthorized && got == string(unauthenticatedBody) &&
			fmt.Sprint(rec.Header()) == fmt.Sprint(http.Header{"Content-Type": jsonContentType})
		// The event path of an app without an encrypt key ignores the
		// signature headers: Lark signs only with an encrypt key.
		unsignedPath := !signed || (app.EncryptKey == "" && !card)
		switch {
		case rec.Code == http.StatusOK:
			// Unsigned, only the challenge passes where Lark signs.
			if unsignedPath && (app.EncryptKey != "" || card) && !strings.HasPrefix(got, `{"challenge":`) {
				t.Fatalf("unsigned request accepted as more than a challenge: %s", got)
			}
		case rec.Code == http.StatusRequestEntityTooLarge:
			// Depends on the length alone.
		case signed && wrong && !unsignedPath:
			if rec.Code != http.StatusUnauthorized || !strings.Contains(got, `"reason":"bad_signature"`) {
				t.Fatalf("wrong signature answered %d %s", rec.Code, got)
			}
		case unsignedPath && app.EncryptKey == "" && !card && rec.Code == http.StatusBadRequest &&
			(strings.Contains(got, `"reason":"malformed"`) || strings.Contains(got, `"reason":"unknown_schema"`)):
			// The token was proven; only then may the answer say more.
		case unsignedPath:
			if !uniform {
				t.Fatalf("unsigned request answered %d %v %s, not the uniform answer", rec.Code, rec.Header(), got)
			}
		case uniform:
			t.Fatalf("correctly signed request got the unsigned requests' answer")
		}
		if rec.Code != http.StatusOK && pub.stored() != before {
			t.Fatalf("answered %d but stored", rec.Code)
		}
	})
}
