package ingest

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha1" //nolint:gosec // Lark's legacy card-callback signature is SHA-1; we only verify it.
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
)

// Errors of the authentication layer, each mapped to an HTTP status and a
// rejection reason by the handler.
var (
	ErrUndecryptable = errors.New("undecryptable body")
	ErrBadSignature  = errors.New("signature mismatch")
)

// Hand-written rather than taken from the SDK: its EventDecrypt does not
// check PKCS#7 padding (it slices from the first '{' to the last '}'), so
// garbage decrypts "successfully"; here every padding byte is validated.

// cipherKey derives Lark's AES-256 key: SHA-256 of the Encrypt Key.
func cipherKey(encryptKey string) [32]byte { return sha256.Sum256([]byte(encryptKey)) }

// newCipher is the AES-256 block for an Encrypt Key; safe for concurrent
// use, so the server derives it once per app.
func newCipher(encryptKey string) cipher.Block {
	key := cipherKey(encryptKey)
	block, _ := aes.NewCipher(key[:]) // a 32-byte key cannot fail
	return block
}

// Decrypt opens Lark's "encrypt" field: base64(IV || AES-256-CBC(PKCS#7(plain))).
func Decrypt(encrypt, encryptKey string) ([]byte, error) {
	return decrypt(make([]byte, base64.StdEncoding.DecodedLen(len(encrypt))), []byte(encrypt), newCipher(encryptKey))
}

// decrypt is Decrypt into dst, which must hold DecodedLen(len(encrypt))
// bytes: the handler passes a pooled buffer, and the plaintext returned is
// a slice of it (decrypted in place).
func decrypt(dst, encrypt []byte, block cipher.Block) ([]byte, error) {
	m, err := base64.StdEncoding.Decode(dst, encrypt)
	if err != nil {
		return nil, fmt.Errorf("%w: base64: %v", ErrUndecryptable, err)
	}
	raw := dst[:m]
	if len(raw) < 2*aes.BlockSize || len(raw)%aes.BlockSize != 0 {
		return nil, fmt.Errorf("%w: %d bytes is not IV plus whole blocks", ErrUndecryptable, len(raw))
	}
	iv, plain := raw[:aes.BlockSize], raw[aes.BlockSize:]
	// In place: CBC decryption allows dst and src to overlap entirely.
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(plain, plain)
	n := int(plain[len(plain)-1])
	if n == 0 || n > aes.BlockSize || n > len(plain) {
		return nil, fmt.Errorf("%w: bad padding", ErrUndecryptable)
	}
	// Constant-time padding check: no padding oracle on timing.
	bad := 0
	for _, b := range plain[len(plain)-n:] {
		bad |= int(b) ^ n
	}
	if bad != 0 {
		return nil, fmt.Errorf("%w: bad padding", ErrUndecryptable)
	}
	return plain[:len(plain)-n], nil
}

// Encrypt is Decrypt's inverse with the given IV (16 bytes); the emulator's
// event sender, benchmarks and tests use it to build what Lark sends.
func Encrypt(plain []byte, encryptKey string, iv []byte) (string, error) {
	if len(iv) != aes.BlockSize {
		return "", fmt.Errorf("encrypting: IV must be %d bytes", aes.BlockSize)
	}
	key := cipherKey(encryptKey)
	block, _ := aes.NewCipher(key[:])
	n := aes.BlockSize - len(plain)%aes.BlockSize
	buf := make([]byte, aes.BlockSize+len(plain)+n)
	copy(buf, iv)
	copy(buf[aes.BlockSize:], plain)
	for i := len(buf) - n; i < len(buf); i++ {
		buf[i] = byte(n)
	}
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(buf[aes.BlockSize:], buf[aes.BlockSize:])
	return base64.StdEncoding.EncodeToString(buf), nil
}

// EventSignature is X-Lark-Signature for events and 2.0 callbacks:
// lowercase hex SHA-256 over timestamp + nonce + encrypt key + raw body.
func EventSignature(timestamp, nonce, encryptKey string, body []byte) string {
	sig, _ := appendEventSignature(nil, nil, timestamp, nonce, encryptKey, body)
	return string(sig)
}

// appendEventSignature appends EventSignature to dst. The signed bytes are
// gathered in scratch (returned, grown) and hashed in one call: hashing
// through hash.Hash costs an allocation per string written.
func appendEventSignature(dst, scratch []byte, timestamp, nonce, encryptKey string, body []byte) ([]byte, []byte) {
	scratch = append(append(append(append(scratch[:0], timestamp...), nonce...), encryptKey...), body...)
	sum := sha256.Sum256(scratch)
	return hex.AppendEncode(dst, sum[:]), scratch
}

// CardSignature is the legacy card callback's X-Lark-Signature: lowercase
// hex SHA-1 over timestamp + nonce + verification token + raw body.
func CardSignature(timestamp, nonce, verificationToken string, body []byte) string {
	h := sha1.New() //nolint:gosec // see import
	h.Write([]byte(timestamp))
	h.Write([]byte(nonce))
	h.Write([]byte(verificationToken))
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// signatureOK compares hex signatures in constant time (case-insensitive on
// the received value, as Lark sends lowercase).
func signatureOK(got, want string) bool { return signatureMatches(got, []byte(want)) }

// signatureMatches is signatureOK without allocating: got is lowercased
// into a stack buffer (hex signatures here are at most 64 bytes).
func signatureMatches(got string, want []byte) bool {
	var buf [64]byte
	if len(got) != len(want) || len(got) > len(buf) {
		return false
	}
	b := buf[:len(got)]
	for i := 0; i < len(got); i++ {
		c := got[i]
		if c >= 'A' && c <= 'F' {
			c += 'a' - 'A'
		}
		b[i] = c
	}
	return subtle.ConstantTimeCompare(b, want) == 1
}
