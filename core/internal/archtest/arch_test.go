// Package archtest keeps the rules of docs/architecture.md#rules: the
// dependency rules (plugins → sdk → proto/gen, nothing outside core imports
// core, each vendor SDK owned by one package), and the repository standing
// alone (every cited docs/….md#section exists, no document outside the
// repository is cited).
package archtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"go/version"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/larkway/larkway"

// The Go modules of the workspace (go.work): the core, the contract, the SDK
// plugin authors require, and the example plugins built against it.
const (
	protoMod   = mod + "/proto"
	sdkMod     = mod + "/sdk/go"
	pluginsMod = mod + "/plugins"
)

type module struct {
	Path string
	Dir  string
}

// workspaceModules lists go.work's modules and fails unless all of them are
// there: without the workspace (GOWORK=off) the rules below would silently
// check the core alone.
func workspaceModules(t *testing.T) map[string]module {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-json").Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	mods := map[string]module{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var m module
		if err := dec.Decode(&m); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		mods[m.Path] = m
	}
	for _, want := range []string{mod, protoMod, sdkMod, pluginsMod} {
		if _, ok := mods[want]; !ok {
			t.Fatalf("module %s is not in the workspace (go list -m: %s): run with the repository's go.work", want, out)
		}
	}
	return mods
}

type pkg struct {
	ImportPath string
	Module     struct{ Path string }
	Imports    []string
	Deps       []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	args := []string{"list", "-e", "-json=ImportPath,Module,Imports,Deps"}
	for path := range workspaceModules(t) {
		args = append(args, path+"/...")
	}
	out, err := exec.Command("go", args...).Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	var pkgs []pkg
	seen, listed := map[string]bool{}, map[string]bool{}
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if seen[p.ImportPath] {
			continue // matched by both the core's pattern and a nested module's
		}
		seen[p.ImportPath] = true
		pkgs = append(pkgs, p)
		listed[p.Module.Path] = true
	}
	for _, m := range []string{mod, protoMod, sdkMod, pluginsMod} {
		if !listed[m] {
			t.Fatalf("go list %s listed no package of module %s", strings.Join(args[3:], " "), m)
		}
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
		// plugins → sdk → proto, never back.
		for _, d := range p.Deps {
			if (strings.HasPrefix(p.ImportPath, sdkMod+"/") || strings.HasPrefix(p.ImportPath, protoMod+"/")) && strings.HasPrefix(d, pluginsMod+"/") ||
				strings.HasPrefix(p.ImportPath, protoMod+"/") && strings.HasPrefix(d, sdkMod+"/") {
				t.Errorf("%s depends on %s: dependencies run plugins → sdk → proto", p.ImportPath, d)
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

// A plugin author's module graph is the SDK's: it must not contain the core
// module or the core's heavy dependencies (a plugin would download them and
// inherit their version constraints). GOWORK=off, so each module's own go.mod
// decides, exactly as for a module outside this repository. The example
// plugins' module stands for such an author's module.
func TestPluginModuleGraphsExcludeTheCore(t *testing.T) {
	mods := workspaceModules(t)
	// A trailing slash names a path prefix; otherwise a module and its subpaths.
	forbidden := []string{
		"github.com/apache/pulsar-client-go",
		"k8s.io/",
		"sigs.k8s.io/",
		"github.com/prometheus/prometheus",
		"github.com/bytedance/sonic",
		"github.com/goccy/go-json",
		"github.com/redis/go-redis",
		"github.com/larksuite/oapi-sdk-go",
	}
	for _, path := range []string{protoMod, sdkMod, pluginsMod} {
		t.Run(strings.TrimPrefix(path, mod+"/"), func(t *testing.T) {
			deps := moduleGraph(t, mods[path].Dir)
			if len(deps) < 2 || deps[0] != path {
				t.Fatalf("go list -m all in %s listed %q, want %s first and its dependencies", mods[path].Dir, deps, path)
			}
			for _, d := range deps[1:] {
				if d == mod { // only the core itself: the SDK and the contract share its path prefix
					t.Errorf("%s requires the core module %s", path, d)
				}
				for _, f := range forbidden {
					if matchModule(d, f) {
						t.Errorf("%s requires %s: a plugin must not pull the core's module graph", path, d)
					}
				}
			}
		})
	}
}

func matchModule(path, pattern string) bool {
	if strings.HasSuffix(pattern, "/") {
		return strings.HasPrefix(path, pattern)
	}
	return path == pattern || strings.HasPrefix(path, pattern+"/")
}

// moduleGraph is `go list -m all` in dir without the workspace: the main
// module first, then every module in its build graph.
func moduleGraph(t *testing.T, dir string) []string {
	t.Helper()
	cmd := exec.Command("go", "list", "-m", "all")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -m all in %s: %v\n%s", dir, err, stderr.Bytes())
	}
	var paths []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) > 0 {
			paths = append(paths, f[0])
		}
	}
	return paths
}

// sdkMaxGo is the newest go directive the modules a plugin author builds
// against may carry (sdk/README.md promises it). It follows the SDK's
// dependencies (go-plugin needs 1.24; grpc ≤ v1.80 and otel ≤ v1.41 do too),
// never the core's toolchain; raising it is a decision, not a side effect of
// bumping a dependency.
const sdkMaxGo = "go1.24.0"

func TestPluginModulesGoVersion(t *testing.T) {
	mods := workspaceModules(t)
	for _, path := range []string{protoMod, sdkMod, pluginsMod} {
		t.Run(strings.TrimPrefix(path, mod+"/"), func(t *testing.T) {
			cmd := exec.Command("go", "list", "-m", "-f", "{{.GoVersion}}")
			cmd.Dir = mods[path].Dir
			cmd.Env = append(os.Environ(), "GOWORK=off")
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("go list -m in %s: %v", mods[path].Dir, err)
			}
			got := "go" + strings.TrimSpace(string(out))
			if !version.IsValid(got) {
				t.Fatalf("%s: go directive %q is not a Go version", path, got)
			}
			if version.Compare(got, sdkMaxGo) > 0 {
				t.Errorf("%s needs %s, newer than %s: plugin authors would need a newer Go (pin the dependency that raised it lower, or raise sdkMaxGo and sdk/README.md on purpose)", path, got, sdkMaxGo)
			}
		})
	}
}

// The workspace selects one version of each dependency for all its modules,
// so a module that required something newer than the core does would silently
// change what `make build` links into the core. The core's own go.mod must
// stay the record of what the core is built and tested with.
func TestWorkspaceKeepsTheCoresVersions(t *testing.T) {
	root := workspaceModules(t)[mod].Dir
	inWorkspace := coreDependencyVersions(t, root, false)
	alone := coreDependencyVersions(t, root, true)
	for path, v := range inWorkspace {
		if alone[path] != v {
			t.Errorf("the workspace builds the core with %s %s, its go.mod with %s: align the requirements (go.mod of the core, or of the module that raised it)", path, v, alone[path])
		}
	}
	if len(inWorkspace) != len(alone) {
		t.Errorf("the core depends on %d modules in the workspace, %d alone", len(inWorkspace), len(alone))
	}
}

// coreDependencyVersions maps each module the core's packages and their tests
// import (the repository's own modules left out) to its selected version.
func coreDependencyVersions(t *testing.T, root string, alone bool) map[string]string {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-test", "-f", "{{with .Module}}{{.Path}} {{.Version}}{{end}}", "./...")
	cmd.Dir = root
	cmd.Env = os.Environ()
	if alone {
		cmd.Env = append(cmd.Env, "GOWORK=off")
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps (GOWORK=off: %t): %v\n%s", alone, err, stderr.Bytes())
	}
	versions := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] != mod && !strings.HasPrefix(f[0], mod+"/") {
			versions[f[0]] = f[1]
		}
	}
	if len(versions) == 0 {
		t.Fatalf("go list -deps in %s (GOWORK=off: %t) named no dependency", root, alone)
	}
	return versions
}
