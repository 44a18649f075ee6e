package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/larkway/larkway/core/larkemu"
)

// The emulator's flags reach it: listed apps and their secrets (a wrong
// secret gets Lark's error), the token lifetime, and rate limits off.
func TestEmulatorFlags(t *testing.T) {
	// start runs `larkway emulator ARGS` serving on a test server, on a
	// clock that stands still so rate-limit windows never roll over.
	start := func(t *testing.T, args ...string) string {
		t.Helper()
		got := make(chan larkemu.Options, 1)
		cmd := emulatorCmd(io.Discard, func(_ context.Context, o larkemu.Options, _ string) error {
			got <- o
			return nil
		})
		cmd.SetArgs(args)
		if err := cmd.Execute(); err != nil {
			t.Fatal(err)
		}
		opts := <-got
		now := time.Now()
		opts.Now = func() time.Time { return now }
		srv := httptest.NewServer(larkemu.New(opts).Handler())
		t.Cleanup(srv.Close)
		return srv.URL
	}
	post := func(t *testing.T, url, path, token, body string) (code int, msg string, expire float64) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, url+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r struct {
			Code   int     `json:"code"`
			Msg    string  `json:"msg"`
			Expire float64 `json:"expire"`
			Token  string  `json:"tenant_access_token"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			t.Fatal(err)
		}
		if r.Token != "" {
			msg = r.Token
		} else {
			msg = r.Msg
		}
		return r.Code, msg, r.Expire
	}
	token := func(t *testing.T, url, app, secret string) (code int, msg string, expire float64) {
		return post(t, url, "/open-apis/auth/v3/tenant_access_token/internal", "", `{"app_id":"`+app+`","app_secret":"`+secret+`"}`)
	}
	// sends posts n messages into one chat and returns the codes.
	sends := func(t *testing.T, url string, n int) []int {
		code, tok, _ := token(t, url, "cli_any", "s")
		if code != 0 {
			t.Fatalf("token: code %d %s", code, tok)
		}
		var codes []int
		for range n {
			c, _, _ := post(t, url, "/open-apis/im/v1/messages?receive_id_type=chat_id", tok,
				`{"receive_id":"oc_1","msg_type":"text","content":"{\"text\":\"x\"}"}`)
			codes = append(codes, c)
		}
		return codes
	}

	t.Run("apps and secrets", func(t *testing.T) {
		url := start(t, "--app", "cli_a=secret-a", "--app", "cli_b=secret-b")
		for _, tc := range []struct {
			app, secret string
			want        int
		}{{"cli_a", "secret-a", 0}, {"cli_b", "secret-b", 0}, {"cli_a", "secret-b", 10014}, {"cli_c", "secret-a", 10003}} {
			if code, msg, _ := token(t, url, tc.app, tc.secret); code != tc.want {
				t.Errorf("%s/%s: code %d %q, want %d", tc.app, tc.secret, code, msg, tc.want)
			}
		}
	})
	t.Run("any app by default", func(t *testing.T) {
		if code, msg, expire := token(t, start(t), "cli_any", "whatever"); code != 0 || expire != (2*time.Hour).Seconds() {
			t.Fatalf("code %d %q expire %v", code, msg, expire)
		}
	})
	t.Run("token ttl", func(t *testing.T) {
		if code, msg, expire := token(t, start(t, "--token-ttl", "5m"), "cli_any", "s"); code != 0 || expire != 300 {
			t.Fatalf("code %d %q expire %v, want 300", code, msg, expire)
		}
	})
	// Lark allows 5 messages a second into one chat (code 230020 past it).
	t.Run("limits on by default", func(t *testing.T) {
		if codes := sends(t, start(t), 6); !slices.Equal(codes, []int{0, 0, 0, 0, 0, 230020}) {
			t.Fatalf("codes %v", codes)
		}
	})
	t.Run("unlimited", func(t *testing.T) {
		if codes := sends(t, start(t, "--unlimited"), 6); !slices.Equal(codes, []int{0, 0, 0, 0, 0, 0}) {
			t.Fatalf("codes %v", codes)
		}
	})
}

func TestEmulatorFlagErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad log level", []string{"--log-level", "verbose"}, `--log-level "verbose": want debug, info, warn, error`},
		{"slog-only log level", []string{"--log-level", "INFO+2"}, `--log-level "INFO+2"`},
		{"app without secret", []string{"--app", "cli_a"}, `--app "cli_a": want ID=SECRET`},
		{"app with empty secret", []string{"--app", "cli_a="}, `--app "cli_a=": want ID=SECRET`},
		{"app twice", []string{"--app", "cli_a=x", "--app", "cli_a=y"}, "app cli_a given twice"},
		{"zero token ttl", []string{"--token-ttl", "0s"}, "--token-ttl 0s: want > 0"},
		{"bad token ttl", []string{"--token-ttl", "soon"}, `invalid argument "soon" for "--token-ttl"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Port 1 would fail to listen; a flag error must come first.
			code, out, errOut := runCLI(t, append([]string{"emulator", "--listen", "127.0.0.1:1"}, tt.args...)...)
			if code != 2 || !strings.Contains(errOut, tt.want) || out != "" {
				t.Fatalf("code %d, want 2 and %q\nstdout: %s\nstderr: %s", code, tt.want, out, errOut)
			}
		})
	}
}

// Every command taking --log-level refuses a level it does not know rather
// than logging at info.
func TestLogLevelRefusedEverywhere(t *testing.T) {
	bad := writeConfig(t, validConfig+"log_level: verbose\n")
	for _, args := range [][]string{
		{"emulator", "--log-level", "verbose"},
		{"bench", "--log-level", "verbose"},
		{"serve", "--config", bad},
	} {
		code, _, errOut := runCLI(t, args...)
		if code == 0 || !strings.Contains(errOut, "verbose") {
			t.Errorf("%v: code %d\nstderr: %s", args, code, errOut)
		}
	}
}

// --playground-core serves the playground beside the emulated API, on the
// same listener; a core URL that is not one is refused.
func TestEmulatorPlaygroundFlags(t *testing.T) {
	options := func(t *testing.T, args ...string) (larkemu.Options, error) {
		t.Helper()
		got := make(chan larkemu.Options, 1)
		cmd := emulatorCmd(io.Discard, func(_ context.Context, o larkemu.Options, _ string) error {
			got <- o
			return nil
		})
		cmd.SetArgs(args)
		cmd.SetOut(io.Discard)
		cmd.SetErr(io.Discard)
		if err := cmd.Execute(); err != nil {
			return larkemu.Options{}, err
		}
		return <-got, nil
	}
	if o, err := options(t); err != nil || o.Wrap != nil {
		t.Fatalf("without --playground-core: err %v, playground %v", err, o.Wrap != nil)
	}
	o, err := options(t, "--playground-core", "http://127.0.0.1:8090/lark/events", "--playground-app", "cli_x")
	if err != nil || o.Wrap == nil {
		t.Fatalf("with --playground-core: err %v, playground %v", err, o.Wrap != nil)
	}
	srv := httptest.NewServer(larkemu.New(o).Handler())
	t.Cleanup(srv.Close)
	for path, want := range map[string]string{"/playground": "larkway playground", "/_emu/messages": "[]"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), want) {
			t.Errorf("GET %s: %d %s, want %q", path, resp.StatusCode, b, want)
		}
	}
	for _, bad := range []string{"127.0.0.1:8090", "ftp://x/y", "http://"} {
		if _, err := options(t, "--playground-core", bad); err == nil {
			t.Errorf("--playground-core %q accepted", bad)
		}
	}
}
