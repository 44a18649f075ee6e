package app_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// encryptLark encrypts plain as Lark does: AES-256-CBC, key = SHA-256 of
// the encrypt key, a random IV in front, PKCS#7, base64.
func encryptLark(t *testing.T, key, plain string) []byte {
	t.Helper()
	k := sha256.Sum256([]byte(key))
	block, err := aes.NewCipher(k[:])
	if err != nil {
		t.Fatal(err)
	}
	pad := aes.BlockSize - len(plain)%aes.BlockSize
	data := append([]byte(plain), bytes.Repeat([]byte{byte(pad)}, pad)...)
	out := make([]byte, aes.BlockSize+len(data))
	if _, err := rand.Read(out[:aes.BlockSize]); err != nil {
		t.Fatal(err)
	}
	cipher.NewCBCEncrypter(block, out[:aes.BlockSize]).CryptBlocks(out[aes.BlockSize:], data)
	return out
}

// The padding-oracle attack against a live core on loopback, as an
// attacker without the encrypt key would run it: 256 unsigned probes that
// vary the last byte of the IV of a real encrypted body (some pad
// correctly and decrypt to garbage, most do not) get one identical answer
// on the event path and on the legacy card path, and the webhook listener
// has no /metrics to read rejection reasons from.
func TestPaddingOracleOnLiveCore(t *testing.T) {
	t.Parallel()
	const key = "oracle-encrypt-key"
	c := runCore(t, `
listen: 127.0.0.1:0
metrics: {listen: 127.0.0.1:0}
apps:
  - {id: cli_oracle, secret: s, verification_token: oracle-token, encrypt_key: `+key+`, event_path: /lark/events, card_path: /lark/cards}
`)
	ct := encryptLark(t, key, `{"schema":"2.0","header":{"token":"oracle-token","event_type":"im.message.receive_v1"}}`)
	for _, path := range []string{"/lark/events", "/lark/cards"} {
		answers := map[string]int{}
		for b := range 256 {
			probe := bytes.Clone(ct)
			probe[aes.BlockSize-1] = byte(b)
			body := fmt.Sprintf(`{"encrypt":%q}`, base64.StdEncoding.EncodeToString(probe))
			resp, err := http.Post("http://"+c.addr+path, "application/json", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			resp.Header.Del("Date")
			answers[fmt.Sprintf("%d %v %s", resp.StatusCode, resp.Header, got)]++
		}
		if len(answers) != 1 {
			t.Errorf("%s: %d distinct answers to 256 probes, want 1: %v", path, len(answers), answers)
		}
		for a := range answers {
			if strings.HasPrefix(a, "200") {
				t.Errorf("%s: a forged probe was accepted: %s", path, a)
			}
		}
	}
	resp, err := http.Get("http://" + c.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("/metrics on the webhook listener: %d, want 404", resp.StatusCode)
	}
}
