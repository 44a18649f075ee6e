package longconn

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	ok := Config{AppID: "cli_a", AppSecret: "s"}
	tests := []struct {
		name string
		edit func(*Config)
		want string // "" = valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"50 connections", func(c *Config) { c.Connections = 50 }, ""},
		{"no app id", func(c *Config) { c.AppID = "" }, "AppID is required"},
		{"no secret", func(c *Config) { c.AppSecret = "" }, "AppSecret is required"},
		{"51 connections", func(c *Config) { c.Connections = 51 }, "Connections 51 is outside 1..50"},
		{"negative connections", func(c *Config) { c.Connections = -1 }, "Connections -1"},
		{"bad base url", func(c *Config) { c.BaseURL = "ftp://x" }, "BaseURL"},
		{"negative workers", func(c *Config) { c.Workers = -2 }, "Workers -2 is negative"},
		{"negative timeout", func(c *Config) { c.PublishTimeout = -time.Second }, "PublishTimeout -1s is negative"},
		{"backoff upside down", func(c *Config) { c.ReconnectMin, c.ReconnectMax = time.Minute, time.Second }, "ReconnectMax 1s is below ReconnectMin 1m0s"},
		{"liveness below ping", func(c *Config) { c.PingInterval, c.LivenessTimeout = time.Second, time.Second }, "LivenessTimeout 1s must exceed the ping interval (1s)"},
		{"liveness below server's longest ping", func(c *Config) { c.LivenessTimeout = time.Minute }, "must exceed the ping interval (2m0s)"},
		{"liveness above ping", func(c *Config) { c.PingInterval, c.LivenessTimeout = time.Second, 3*time.Second }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.edit(&c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	if err := (Config{AppID: "a", AppSecret: "hunter2-secret", Connections: 99}).Validate(); strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error mentions the secret: %v", err)
	}
}

func TestServerPingInterval(t *testing.T) {
	for _, tt := range []struct {
		seconds int
		want    time.Duration
	}{
		{0, DefaultPingInterval}, {-5, DefaultPingInterval}, {1, MinServerPingInterval},
		{90, 90 * time.Second}, {3600, MaxServerPingInterval},
	} {
		if got := serverPingInterval(tt.seconds); got != tt.want {
			t.Errorf("serverPingInterval(%d) = %s, want %s", tt.seconds, got, tt.want)
		}
	}
	c := Config{}
	if got := c.livenessFor(2 * time.Minute); got != 5*time.Minute {
		t.Errorf("default liveness for 2m pings = %s, want 5m", got)
	}
	c.LivenessTimeout = time.Second
	if got := c.livenessFor(2 * time.Minute); got != time.Second {
		t.Errorf("configured liveness = %s, want 1s", got)
	}
}

func TestBackoff(t *testing.T) {
	lo, hi := 100*time.Millisecond, 2*time.Second
	for n := range 10 {
		step := min(lo<<n, hi)
		for range 50 {
			d := reconnectDelay(lo, hi, n)
			if d < step/2 || d > step {
				t.Fatalf("backoff(attempt %d) = %s, want within [%s, %s]", n, d, step/2, step)
			}
		}
	}
	if d := reconnectDelay(0, 0, 3); d != 0 {
		t.Errorf("zero backoff = %s", d)
	}
}

func TestReassembler(t *testing.T) {
	t0 := time.Unix(1000, 0)
	type step struct {
		id       string
		sum, seq int
		part     string
		at       time.Duration
		want     string // whole payload when complete
		err      error
	}
	tests := []struct {
		name        string
		maxBytes    int
		maxPending  int
		steps       []step
		pendingLeft int
		dropped     []string
	}{
		{name: "in order", steps: []step{
			{id: "m", sum: 3, seq: 0, part: "ab"}, {id: "m", sum: 3, seq: 1, part: "cd"}, {id: "m", sum: 3, seq: 2, part: "e", want: "abcde"},
		}},
		{name: "out of order", steps: []step{
			{id: "m", sum: 3, seq: 2, part: "e"}, {id: "m", sum: 3, seq: 0, part: "ab"}, {id: "m", sum: 3, seq: 1, part: "cd", want: "abcde"},
		}},
		{name: "interleaved messages", steps: []step{
			{id: "a", sum: 2, seq: 0, part: "a0"}, {id: "b", sum: 2, seq: 1, part: "b1"},
			{id: "a", sum: 2, seq: 1, part: "a1", want: "a0a1"}, {id: "b", sum: 2, seq: 0, part: "b0", want: "b0b1"},
		}},
		{name: "empty fragment", steps: []step{
			{id: "m", sum: 2, seq: 0, part: ""}, {id: "m", sum: 2, seq: 1, part: "x", want: "x"},
		}},
		{name: "duplicate fragment is refused, message survives", pendingLeft: 0, steps: []step{
			{id: "m", sum: 2, seq: 0, part: "a"}, {id: "m", sum: 2, seq: 0, part: "a", err: errDuplicatePart},
			{id: "m", sum: 2, seq: 1, part: "b", want: "ab"},
		}},
		{name: "no message id", steps: []step{{id: "", sum: 2, seq: 0, part: "a", err: errNoMessageID}}},
		{name: "seq out of range", steps: []step{
			{id: "m", sum: 2, seq: 2, part: "a", err: errBadSeq}, {id: "m", sum: 2, seq: -1, part: "a", err: errBadSeq},
		}},
		{name: "sum too large", steps: []step{{id: "m", sum: maxFragments + 1, seq: 0, part: "a", err: errTooManyParts}}},
		{name: "sum changes", steps: []step{
			{id: "m", sum: 2, seq: 0, part: "a"}, {id: "m", sum: 3, seq: 1, part: "b", err: errSumMismatch},
		}},
		{name: "too large", maxBytes: 4, steps: []step{
			{id: "m", sum: 3, seq: 0, part: "ab"}, {id: "m", sum: 3, seq: 1, part: "cde", err: errTooLarge},
			{id: "m", sum: 3, seq: 2, part: "f"}, // a fresh, incomplete message
		}, pendingLeft: 1},
		{name: "expired after ttl", steps: []step{
			{id: "m", sum: 2, seq: 0, part: "a"}, {id: "n", sum: 2, seq: 0, part: "x", at: 11 * time.Second},
			{id: "m", sum: 2, seq: 1, part: "b", at: 11 * time.Second},
		}, pendingLeft: 2, dropped: []string{"m fragments expired"}},
		{name: "oldest evicted", maxPending: 2, steps: []step{
			{id: "a", sum: 2, seq: 0, part: "a", at: 1}, {id: "b", sum: 2, seq: 0, part: "b", at: 2},
			{id: "c", sum: 2, seq: 0, part: "c", at: 3}, {id: "c", sum: 2, seq: 1, part: "C", at: 4, want: "cC"},
		}, pendingLeft: 1, dropped: []string{"a too many messages being reassembled"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.maxBytes == 0 {
				tt.maxBytes = 1 << 20
			}
			if tt.maxPending == 0 {
				tt.maxPending = 8
			}
			var dropped []string
			r := newReassembler(tt.maxBytes, tt.maxPending, 10*time.Second, func(id string, _, _ int, reason string) {
				dropped = append(dropped, id+" "+reason)
			})
			for i, s := range tt.steps {
				got, err := r.add(s.id, s.sum, s.seq, []byte(s.part), t0.Add(s.at))
				if !errors.Is(err, s.err) {
					t.Fatalf("step %d: err = %v, want %v", i, err, s.err)
				}
				if s.want == "" && got != nil {
					t.Fatalf("step %d: completed early with %q", i, got)
				}
				if s.want != "" && !bytes.Equal(got, []byte(s.want)) {
					t.Fatalf("step %d: got %q, want %q", i, got, s.want)
				}
			}
			if n := r.pendingCount(); n != tt.pendingLeft {
				t.Errorf("%d messages pending, want %d", n, tt.pendingLeft)
			}
			if strings.Join(dropped, ",") != strings.Join(tt.dropped, ",") {
				t.Errorf("dropped %q, want %q", dropped, tt.dropped)
			}
		})
	}
}

func TestHandshakeErrorClassification(t *testing.T) {
	tests := []struct {
		name      string
		headers   map[string]string
		permanent bool
		mention   string
	}{
		{"connection limit", map[string]string{"Handshake-Status": "514", "Handshake-Autherrcode": "1000040350", "Handshake-Msg": "exceed"}, true, "already has 50 connections"},
		{"forbidden", map[string]string{"Handshake-Status": "403", "Handshake-Msg": "banned"}, true, "banned"},
		{"auth failed, other code", map[string]string{"Handshake-Status": "514", "Handshake-Autherrcode": "1000040351"}, false, "514"},
		{"auth failed, no code", map[string]string{"Handshake-Status": "514"}, false, "514"},
		{"no headers (proxy error)", nil, false, "HTTP 502"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := &http.Response{StatusCode: http.StatusBadGateway, Header: http.Header{}}
			for k, v := range tt.headers {
				resp.Header.Set(k, v)
			}
			err := error(handshakeError(resp))
			if IsPermanent(err) != tt.permanent {
				t.Errorf("IsPermanent(%v) = %v, want %v", err, !tt.permanent, tt.permanent)
			}
			if !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("%q does not mention %q", err, tt.mention)
			}
		})
	}
}

func TestDiscover(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		body      string
		hang      bool
		permanent bool
		wantErr   string // "" = success
	}{
		{name: "ok", body: `{"code":0,"data":{"URL":"wss://msg-frontier.feishu.cn/ws/v2?device_id=77&service_id=33554678&ticket=t","ClientConfig":{"PingInterval":90}}}`},
		{name: "system busy is retried", body: `{"code":1,"msg":"system busy"}`, wantErr: "code 1: system busy"},
		{name: "internal error is retried", body: `{"code":1000040343,"msg":"internal"}`, wantErr: "code 1000040343"},
		{name: "other code is permanent", body: `{"code":10014,"msg":"app secret invalid"}`, permanent: true, wantErr: "code 10014: app secret invalid"},
		{name: "null data is retried", body: `{"code":0,"msg":"ok","data":null}`, wantErr: "null data"},
		{name: "no data is retried", body: `{"code":0}`, wantErr: "null data"},
		{name: "empty url is retried", body: `{"code":0,"data":{"URL":""}}`, wantErr: "null data"},
		{name: "http url is retried", body: `{"code":0,"data":{"URL":"http://x/ws"}}`, wantErr: "not a ws(s) URL"},
		{name: "not json is retried", body: `<html>`, wantErr: "decoding the response"},
		{name: "http 503 is retried", status: 503, wantErr: "HTTP 503"},
		{name: "timeout is retried", hang: true, wantErr: "deadline exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodPost || r.URL.Path != EndpointPath {
					t.Errorf("got %s %s", r.Method, r.URL.Path)
				}
				if !strings.Contains(readAll(r), `"AppSecret":"s3cret"`) {
					t.Error("request body does not carry AppSecret")
				}
				if tt.hang {
					<-r.Context().Done()
					return
				}
				if tt.status != 0 {
					w.WriteHeader(tt.status)
				}
				_, _ = w.Write([]byte(tt.body))
			}))
			defer srv.Close()
			c := New(Config{AppID: "cli_a", AppSecret: "s3cret", BaseURL: srv.URL, DiscoveryTimeout: 100 * time.Millisecond}, nil, nil, nil)
			start := time.Now()
			ep, err := c.discover(context.Background())
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if ep.connID != "77" || ep.serviceID != 33554678 || ep.config.PingInterval != 90 {
					t.Errorf("endpoint = %+v", ep)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("discover() error = %v, want one containing %q", err, tt.wantErr)
			}
			var de *DiscoveryError
			if !errors.As(err, &de) {
				t.Errorf("error %T is not a *DiscoveryError", err)
			}
			if IsPermanent(err) != tt.permanent {
				t.Errorf("IsPermanent = %v, want %v", !tt.permanent, tt.permanent)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error leaks the secret: %v", err)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("discover took %s with a 100ms timeout", took)
			}
		})
	}
}

func readAll(r *http.Request) string {
	var b bytes.Buffer
	_, _ = b.ReadFrom(r.Body)
	return b.String()
}
