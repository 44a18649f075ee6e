// Package archtest keeps the rules of docs/architecture.md#rules: the
// dependency rules (plugins → sdk → proto/gen, nothing outside core imports
// core, each vendor SDK owned by one package), and the repository standing
// alone (every cited docs/….md#section exists, no document outside the
// repository is cited).
package archtest

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/larkway/larkway"

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-e", "-json=ImportPath,Imports,Deps", mod+"/...")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var pkgs []pkg
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

func TestDependencyRules(t *testing.T) {
	// vendor import prefix → the only package (prefix) allowed to import it directly.
	owners := map[string]string{
		"github.com/apache/pulsar-client-go": mod + "/core/internal/bus/pulsar",
		"github.com/larksuite/oapi-sdk-go":   mod + "/core/internal/lark",
		"github.com/hashicorp/go-plugin":     mod + "/core/internal/pluginhost",
	}
	for _, p := range listPackages(t) {
		inCore := strings.HasPrefix(p.ImportPath, mod+"/core/")
		outsideCore := strings.HasPrefix(p.ImportPath, mod+"/sdk/") || strings.HasPrefix(p.ImportPath, mod+"/plugins/") || strings.HasPrefix(p.ImportPath, mod+"/proto/")
		if outsideCore {
			for _, d := range p.Deps {
				if strings.HasPrefix(d, mod+"/core/") {
					t.Errorf("%s depends on %s: sdk, plugins and proto must never import core", p.ImportPath, d)
				}
			}
		}
		if strings.HasPrefix(p.ImportPath, mod+"/plugins/") {
			for _, d := range p.Imports {
				if strings.HasPrefix(d, mod+"/proto/") {
					t.Errorf("%s imports %s: plugins use the SDK, not the generated contract", p.ImportPath, d)
				}
			}
		}
		for _, imp := range p.Imports {
			for vendor, owner := range owners {
				// The SDK's plugin side of go-plugin is its own business.
				if !strings.HasPrefix(imp, vendor) || !inCore {
					continue
				}
				if !strings.HasPrefix(p.ImportPath, owner) {
					t.Errorf("%s imports %s: only %s may", p.ImportPath, imp, owner)
				}
			}
		}
	}
}
