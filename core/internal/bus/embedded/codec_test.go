package embedded

import (
	"maps"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/bus"
)

func TestMessageRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		m    bus.Message
	}{
		{"empty", bus.Message{}},
		{"full", bus.Message{Key: "oc_1", Payload: []byte(`{"a":1}`), Properties: map[string]string{"event_id": "ev", "": "empty key"}}},
		{"binary", bus.Message{Key: "\x00\xff", Payload: []byte{0, 1, 2, 0xff}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			at := time.Unix(1700000000, 123456789)
			m, published, err := decodeMessage(encodeMessage(tc.m, at))
			if err != nil {
				t.Fatal(err)
			}
			if m.Key != tc.m.Key || string(m.Payload) != string(tc.m.Payload) || !maps.Equal(m.Properties, tc.m.Properties) || !published.Equal(at) {
				t.Errorf("decoded %+v at %v, want %+v at %v", m, published, tc.m, at)
			}
		})
	}
}

func TestKeysRoundTrip(t *testing.T) {
	for _, k := range [][]byte{messageKey("t\x00x", 7), pendingKey("t", "s\xff", 1<<40), subscriptionKey("a", "b"), topicKey("")} {
		kind, topic, sub, seq, err := parseKey(k)
		if err != nil {
			t.Fatalf("parseKey(%q): %v", k, err)
		}
		var again []byte
		switch kind {
		case kindMessage:
			again = messageKey(topic, seq)
		case kindPending:
			again = pendingKey(topic, sub, seq)
		case kindSubscription:
			again = subscriptionKey(topic, sub)
		case kindTopic:
			again = topicKey(topic)
		}
		if string(again) != string(k) {
			t.Errorf("parseKey(%q) = %c %q %q %d, which encodes to %q", k, kind, topic, sub, seq, again)
		}
	}
}

// Records come off a disk that may be damaged: decoding never panics, and
// what decodes re-encodes to a record that decodes the same.
func FuzzDecodeMessage(f *testing.F) {
	f.Add(encodeMessage(bus.Message{Key: "k", Payload: []byte("p"), Properties: map[string]string{"a": "b"}}, time.Unix(1, 0)))
	f.Add([]byte{recordVersion, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, published, err := decodeMessage(b)
		if err != nil {
			return
		}
		m2, p2, err := decodeMessage(encodeMessage(m, published))
		if err != nil || m2.Key != m.Key || string(m2.Payload) != string(m.Payload) || !maps.Equal(m2.Properties, m.Properties) || !p2.Equal(published) {
			t.Fatalf("re-encoding %+v changed it: %+v (%v)", m, m2, err)
		}
	})
}

func FuzzParseKey(f *testing.F) {
	f.Add(pendingKey("events", "plugin", 3))
	f.Add(messageKey("events", 1))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, _, _, _ = parseKey(b)
		_, _ = decodePending(b)
		_, _ = decodeSeq(b)
	})
}
