package console

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/larkway/larkway/core/internal/cluster"
	"github.com/larkway/larkway/core/internal/dispatch"
	"github.com/larkway/larkway/core/internal/manager"
)

// The canary and shadow forms become the API's typed JSON body; a
// mistyped number is the operator's error, named by its field.
func TestReleaseFormBody(t *testing.T) {
	sha := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name    string
		canary  bool
		form    map[string]string
		want    string
		wantErr string
	}{
		{name: "canary by percent", canary: true,
			form: map[string]string{"path": "/p/echo2", "sha256": sha, "percent": "12.5", "promote_after": "30m", "max_error_rate": "0.01", "min_deliveries": "50"},
			want: `{"max_error_rate":0.01,"min_deliveries":50,"path":"/p/echo2","percent":12.5,"promote_after":"30m","sha256":"` + sha + `"}`},
		{name: "canary by chats, commas and spaces", canary: true,
			form: map[string]string{"path": "/p/echo2", "sha256": sha, "chats": "oc_a, oc_b oc_c,,"},
			want: `{"chats":["oc_a","oc_b","oc_c"],"path":"/p/echo2","sha256":"` + sha + `"}`},
		{name: "shadow ignores the canary's policy fields",
			form: map[string]string{"path": "/p/echo2", "sha256": sha, "promote_after": "10", "max_error_rate": "x"},
			want: `{"path":"/p/echo2","sha256":"` + sha + `"}`},
		{name: "percent not a number", canary: true, form: map[string]string{"percent": "ten"}, wantErr: "percent of chats"},
		{name: "percent above 100", form: map[string]string{"percent": "150"}, wantErr: "percent of chats"},
		{name: "error rate above 1", canary: true, form: map[string]string{"max_error_rate": "5"}, wantErr: "max error rate"},
		{name: "min deliveries negative", canary: true, form: map[string]string{"min_deliveries": "-1"}, wantErr: "min deliveries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, err := releaseBody(tc.canary)(tc.form)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one naming %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if b, _ := json.Marshal(body); string(b) != tc.want {
				t.Fatalf("body %s\nwant %s", b, tc.want)
			}
		})
	}
}

// The split and policy read as the operator set them.
func TestReleaseTexts(t *testing.T) {
	for _, tc := range []struct {
		name string
		rel  cluster.Release
		want string
	}{
		{"canary by hand", cluster.Release{Release: manager.Release{Mode: dispatch.ModeCanary, Split: dispatch.Split{Percent: 10}},
			MaxErrorRate: 0.05, MinDeliveries: 20}, "10 % of chats; promoted by hand; rolled back above 5.0 % errors once it had 20 deliveries"},
		{"canary after a quota or a time", cluster.Release{Release: manager.Release{Mode: dispatch.ModeCanary, Split: dispatch.Split{Chats: []string{"oc_a", "oc_b"}}},
			PromoteAfterDeliveries: 500, PromoteAfterDuration: "30m0s", MaxErrorRate: 0.01, MinDeliveries: 5},
			"chats oc_a, oc_b; promoted after 500 deliveries or 30m0s; rolled back above 1.0 % errors once it had 5 deliveries"},
		{"shadow", cluster.Release{Release: manager.Release{Mode: dispatch.ModeShadow, Split: dispatch.Split{Percent: 100, Chats: []string{"oc_x"}}}},
			"100 % of chats and chats oc_x; never promoted; stopped by hand"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := splitText(tc.rel.Split) + "; " + policyText(&tc.rel); got != tc.want {
				t.Fatalf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}
