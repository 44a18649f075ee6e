package ingest

import (
	"encoding/json"
	"testing"

	"github.com/larkway/larkway/core/internal/envelope"
)

func TestEncryptField(t *testing.T) {
	tests := []struct {
		name, body, want string
		ok               bool
	}{
		{"wrapper", `{"encrypt":"QUJD+/=="}`, "QUJD+/==", true},
		{"whitespace", " {\n \"encrypt\" : \"QUJD\" }\t", "QUJD", true},
		{"empty", `{"encrypt":""}`, "", true},
		{"escape", `{"encrypt":"QU\/JD"}`, "", false},
		{"other case", `{"Encrypt":"QUJD"}`, "", false},
		{"more keys", `{"encrypt":"QUJD","x":1}`, "", false},
		{"trailing", `{"encrypt":"QUJD"} x`, "", false},
		{"control", "{\"encrypt\":\"QU\nJD\"}", "", false},
		{"unterminated", `{"encrypt":"QUJD`, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := encryptField([]byte(tt.body))
			if ok != tt.ok || string(got) != tt.want {
				t.Fatalf("encryptField = %q, %v; want %q, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

// Whatever encryptField accepts, encoding/json reads as the same value.
func FuzzEncryptField(f *testing.F) {
	f.Add([]byte(`{"encrypt":"QUJD+/=="}`))
	f.Add([]byte(` { "encrypt" : "" } `))
	f.Add([]byte(`{"encrypt":"a\u0062"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		got, ok := encryptField(body)
		if !ok {
			return
		}
		var p envelope.Probe
		if err := json.Unmarshal(body, &p); err != nil {
			t.Fatalf("accepted what encoding/json refuses: %v", err)
		}
		if p.Encrypt != string(got) {
			t.Fatalf("encryptField %q, encoding/json %q", got, p.Encrypt)
		}
	})
}
