// Package proto_test keeps the committed generated code honest: it
// regenerates the contract into a scratch copy of the repository and fails if
// anything differs from proto/gen. Run `make generate` to fix it.
package proto_test

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestGeneratedCodeIsFresh(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	tools := filepath.Join(root, ".tools", "bin")
	t.Setenv("PATH", tools+string(os.PathListSeparator)+os.Getenv("PATH"))
	if _, err := exec.LookPath("buf"); err != nil {
		t.Fatalf("buf is not installed: run `make tools` (or `make test`, which does): %v", err)
	}
	scratch := t.TempDir()
	for _, f := range []string{"buf.yaml", "buf.gen.yaml"} {
		copyFile(t, filepath.Join(root, f), filepath.Join(scratch, f))
	}
	src := filepath.Join(root, "proto", "larkway")
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Ext(p) != ".proto" {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		copyFile(t, p, filepath.Join(scratch, rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("buf", "generate")
	cmd.Dir = scratch
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("buf generate: %v\n%s", err, out)
	}
	want := readTree(t, filepath.Join(scratch, "proto", "gen"))
	got := readTree(t, filepath.Join(root, "proto", "gen"))
	for name, w := range want {
		g, ok := got[name]
		if !ok {
			t.Errorf("proto/gen/%s is missing: run make generate", name)
		} else if !bytes.Equal(g, w) {
			t.Errorf("proto/gen/%s is stale: run make generate", name)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("proto/gen/%s is not generated from any .proto: remove it", name)
		}
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func readTree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		b, err := os.ReadFile(p)
		out[rel] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
