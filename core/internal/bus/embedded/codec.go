package embedded

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/larkway/larkway/core/internal/bus"
)

// Keys. Every key starts with a kind byte; names are length-prefixed
// (uvarint), so a topic's keys share a prefix no other topic's keys have,
// whatever bytes the names hold, and sequence numbers are 8 bytes big-endian
// so keys sort in publish order.
//
//	'm' topic seq            → message record (encodeMessage)
//	'p' topic sub seq        → pending state of seq on sub (encodePending)
//	's' topic sub            → subscription record (start seq)
//	't' topic                → topic record: the last seq retention deleted
//	'c'                      → the store was closed cleanly (see Bus.Close)
const (
	kindClean        = 'c'
	kindMessage      = 'm'
	kindPending      = 'p'
	kindSubscription = 's'
	kindTopic        = 't'
)

func appendName(b []byte, name string) []byte {
	b = binary.AppendUvarint(b, uint64(len(name)))
	return append(b, name...)
}

func appendSeq(b []byte, seq uint64) []byte { return binary.BigEndian.AppendUint64(b, seq) }

func topicPrefix(kind byte, topic string) []byte { return appendName([]byte{kind}, topic) }

func messageKey(topic string, seq uint64) []byte {
	return appendSeq(topicPrefix(kindMessage, topic), seq)
}

func subPrefix(kind byte, topic, sub string) []byte {
	return appendName(topicPrefix(kind, topic), sub)
}

func pendingKey(topic, sub string, seq uint64) []byte {
	return appendSeq(subPrefix(kindPending, topic, sub), seq)
}

func subscriptionKey(topic, sub string) []byte { return subPrefix(kindSubscription, topic, sub) }

func topicKey(topic string) []byte { return topicPrefix(kindTopic, topic) }

// prefixEnd is the first key after every key that starts with prefix.
func prefixEnd(prefix []byte) []byte {
	end := append([]byte(nil), prefix...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil // all 0xff: no upper bound
}

// errCorrupt marks records and keys that do not decode.
var errCorrupt = errors.New("corrupt record")

// readName reads a length-prefixed name from b.
func readName(b []byte) (string, []byte, error) {
	n, w := binary.Uvarint(b)
	if w <= 0 || n > uint64(len(b)-w) {
		return "", nil, fmt.Errorf("%w: bad name length", errCorrupt)
	}
	return string(b[w : w+int(n)]), b[w+int(n):], nil
}

// parseKey splits a key into its kind, topic, subscription (kinds 'p' and
// 's') and seq (kinds 'm' and 'p').
func parseKey(k []byte) (kind byte, topic, sub string, seq uint64, err error) {
	if len(k) == 0 {
		return 0, "", "", 0, fmt.Errorf("%w: empty key", errCorrupt)
	}
	kind, rest := k[0], k[1:]
	if topic, rest, err = readName(rest); err != nil {
		return 0, "", "", 0, err
	}
	if kind == kindPending || kind == kindSubscription {
		if sub, rest, err = readName(rest); err != nil {
			return 0, "", "", 0, err
		}
	}
	if kind == kindMessage || kind == kindPending {
		if len(rest) != 8 {
			return 0, "", "", 0, fmt.Errorf("%w: bad sequence number", errCorrupt)
		}
		seq, rest = binary.BigEndian.Uint64(rest), nil
	}
	if len(rest) != 0 {
		return 0, "", "", 0, fmt.Errorf("%w: %d trailing key bytes", errCorrupt, len(rest))
	}
	return kind, topic, sub, seq, nil
}

// recordVersion leads every message record, so that a later format can be
// told apart.
const recordVersion = 1

// encodeMessage is a message record: version, publish time (Unix ns), then
// the key, the payload and the properties, each length-prefixed. Pebble
// checksums the bytes on disk (WAL chunks and sstable blocks); this only
// lays them out.
func encodeMessage(m bus.Message, published time.Time) []byte {
	n := 1 + 8 + 3*binary.MaxVarintLen64 + len(m.Key) + len(m.Payload)
	for k, v := range m.Properties {
		n += 2*binary.MaxVarintLen64 + len(k) + len(v)
	}
	b := make([]byte, 0, n)
	b = append(b, recordVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(published.UnixNano()))
	b = appendName(b, m.Key)
	b = binary.AppendUvarint(b, uint64(len(m.Payload)))
	b = append(b, m.Payload...)
	b = binary.AppendUvarint(b, uint64(len(m.Properties)))
	for k, v := range m.Properties {
		b = appendName(b, k)
		b = appendName(b, v)
	}
	return b
}

// decodeMessage decodes a record from encodeMessage. The result shares no
// memory with b (Pebble reuses the buffers it returns).
func decodeMessage(b []byte) (bus.Message, time.Time, error) {
	var m bus.Message
	if len(b) < 9 || b[0] != recordVersion {
		return m, time.Time{}, fmt.Errorf("%w: bad header", errCorrupt)
	}
	published := time.Unix(0, int64(binary.BigEndian.Uint64(b[1:9])))
	rest := b[9:]
	var err error
	if m.Key, rest, err = readName(rest); err != nil {
		return m, time.Time{}, err
	}
	n, w := binary.Uvarint(rest)
	if w <= 0 || n > uint64(len(rest)-w) {
		return m, time.Time{}, fmt.Errorf("%w: bad payload length", errCorrupt)
	}
	m.Payload = append([]byte(nil), rest[w:w+int(n)]...)
	rest = rest[w+int(n):]
	props, w := binary.Uvarint(rest)
	// Each property takes at least two bytes: this bounds the map's size by
	// the record's, whatever the count says.
	if w <= 0 || props > uint64(len(rest)-w)/2 {
		return m, time.Time{}, fmt.Errorf("%w: bad property count", errCorrupt)
	}
	rest = rest[w:]
	if props > 0 {
		m.Properties = make(map[string]string, props)
	}
	for range props {
		var k, v string
		if k, rest, err = readName(rest); err != nil {
			return m, time.Time{}, err
		}
		if v, rest, err = readName(rest); err != nil {
			return m, time.Time{}, err
		}
		m.Properties[k] = v
	}
	if len(rest) != 0 {
		return m, time.Time{}, fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(rest))
	}
	return m, published, nil
}

// publishedAt reads only a record's publish time.
func publishedAt(b []byte) (time.Time, error) {
	if len(b) < 9 || b[0] != recordVersion {
		return time.Time{}, fmt.Errorf("%w: bad header", errCorrupt)
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(b[1:9]))), nil
}

// pending is a message's delivery state on one subscription.
type pending struct {
	deliveries int
	readyAt    time.Time // redelivery not before; zero when ready
}

func encodePending(p pending) []byte {
	b := binary.AppendUvarint(nil, uint64(p.deliveries))
	var ready int64
	if !p.readyAt.IsZero() {
		ready = p.readyAt.UnixNano()
	}
	return binary.AppendVarint(b, ready)
}

func decodePending(b []byte) (pending, error) {
	d, w := binary.Uvarint(b)
	if w <= 0 || d > 1<<31 {
		return pending{}, fmt.Errorf("%w: bad delivery count", errCorrupt)
	}
	ready, w2 := binary.Varint(b[w:])
	if w2 <= 0 || w+w2 != len(b) {
		return pending{}, fmt.Errorf("%w: bad redelivery time", errCorrupt)
	}
	p := pending{deliveries: int(d)}
	if ready != 0 {
		p.readyAt = time.Unix(0, ready)
	}
	return p, nil
}

// encodeSeq and decodeSeq are the subscription and topic records: one seq.
func encodeSeq(seq uint64) []byte { return appendSeq(nil, seq) }

func decodeSeq(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("%w: bad sequence record", errCorrupt)
	}
	return binary.BigEndian.Uint64(b), nil
}
