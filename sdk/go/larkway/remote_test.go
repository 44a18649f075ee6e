package larkway

import (
	"strings"
	"testing"
)

func TestParseRemoteConfig(t *testing.T) {
	env := map[string]string{EnvListen: ":1", EnvTLSCert: "env.crt", EnvTLSKey: "env.key", EnvClientCA: "env-ca.crt", EnvStateAddress: "core:7444"}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    RemoteConfig
		wantErr string
	}{
		{name: "launched by the core", args: nil, env: nil, want: RemoteConfig{}},
		{name: "environment", env: env, want: RemoteConfig{Listen: ":1", CertFile: "env.crt", KeyFile: "env.key", ClientCAFile: "env-ca.crt", StateAddress: "core:7444"}},
		{name: "flags win", args: []string{"--listen", ":7443", "--tls-cert", "p.crt"}, env: env,
			want: RemoteConfig{Listen: ":7443", CertFile: "p.crt", KeyFile: "env.key", ClientCAFile: "env-ca.crt", StateAddress: "core:7444"}},
		{name: "no TLS", args: []string{"--listen", ":7443"}, wantErr: "mutual TLS"},
		{name: "unknown flag", args: []string{"--lsten", ":7443"}, wantErr: "lsten"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRemoteConfig(tc.args, func(k string) string { return tc.env[k] })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v %v, want %+v", got, err, tc.want)
			}
		})
	}
}
