package lark

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	ok := Config{AppID: "cli_a", AppSecret: "s"}
	tests := map[string]struct {
		cfg     Config
		wantErr string // substring; empty means valid
	}{
		"defaults":           {ok, ""},
		"lark origin":        {Config{AppID: "cli_a", AppSecret: "s", BaseURL: "https://open.larksuite.com/"}, ""},
		"loopback emulator":  {Config{AppID: "cli_a", AppSecret: "s", BaseURL: "http://127.0.0.1:9300"}, ""},
		"missing app id":     {Config{AppSecret: "s"}, "app_id is required"},
		"missing secret":     {Config{AppID: "cli_a"}, "app_secret is required"},
		"relative base url":  {Config{AppID: "cli_a", AppSecret: "s", BaseURL: "open.feishu.cn"}, "not an absolute http(s) URL"},
		"base url with path": {Config{AppID: "cli_a", AppSecret: "s", BaseURL: "https://open.feishu.cn/open-apis"}, "without path"},
		"negative timeout":   {Config{AppID: "cli_a", AppSecret: "s", Timeout: -time.Second}, "negative"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := tc.cfg.WithDefaults().Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Validate() = %v, want error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{AppID: "cli_a", AppSecret: "s"}.WithDefaults()
	if c.BaseURL != DefaultBaseURL || c.Timeout != DefaultTimeout {
		t.Fatalf("WithDefaults() = %v", c)
	}
}

func TestConfigRedactsSecret(t *testing.T) {
	c := Config{AppID: "cli_a", AppSecret: "very-secret"}
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), c.LogValue().String()} {
		if strings.Contains(s, "very-secret") {
			t.Errorf("secret leaked in %q", s)
		}
	}
}
