package app_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/larkway/larkway/core/internal/testenv"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// A plugin is told the core's version (Deps.Version) in Describe.
func TestPluginsSeeTheCoreVersion(t *testing.T) {
	appID := uniqueApp(t, "describe")
	_, emuAddr := emulator(t, appID)
	bare := testenv.BuildPlugin(t, "./core/internal/pluginhost/testdata/bare", t.TempDir())
	report := filepath.Join(t.TempDir(), "report")
	runCore(t, fmt.Sprintf(`
listen: 127.0.0.1:0
metrics: {listen: 127.0.0.1:0}
bus: {kind: memory}
apps:
  - {id: %s, secret: secret, verification_token: vt, base_url: "http://%s"}
plugins:
  - {name: bare, path: %s, env: [BARE_REPORT=%s]}
`, appID, emuAddr, bare, report))
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	var req pluginv1.DescribeRequest
	if err := protojson.Unmarshal([]byte(first), &req); err != nil {
		t.Fatalf("report %q: %v", b, err)
	}
	if req.GetCoreVersion() != "test" {
		t.Errorf("core_version %q, want the Deps.Version %q", req.GetCoreVersion(), "test")
	}
}
