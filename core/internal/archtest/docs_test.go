package archtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"
	"unicode"
)

// selfPath is this file: its fixtures cite broken and outside documents on
// purpose, so the scan of the real repository skips it.
const selfPath = "core/internal/archtest/docs_test.go"

// maxScanBytes skips files too large to be sources or docs (built binaries).
const maxScanBytes = 4 << 20

var (
	// docRef is a repository-rooted citation of a doc: docs/NAME.md, with an
	// optional #section.
	docRef = regexp.MustCompile(`(?:^|[^\w./-])(docs/[\w-]+\.md)(?:#([\w-]+))?`)
	// mdLink is a relative Markdown link target inside docs/: (NAME.md),
	// (NAME.md#section) or (#section).
	mdLink = regexp.MustCompile(`\]\(([\w-]+\.md)?(?:#([\w-]+))?\)`)
	// outside lists citations of documents that live outside the repository
	// (a maintainer who clones it does not have them).
	outside = []struct {
		re  *regexp.Regexp
		why string
		// bare marks a doc named without docs/ in front: outside docs/ it
		// means a copy that is not in the repository; inside docs/ it is a
		// relative link, checked as such.
		bare bool
	}{
		{regexp.MustCompile(regexp.QuoteMeta(sharedFolder)), "cites the " + sharedFolder + " folder", false},
		{regexp.MustCompile(regexp.QuoteMeta(sharedDocs)), "cites " + sharedDocs, false},
		{regexp.MustCompile(regexp.QuoteMeta(pulsarNotes)), "cites " + pulsarNotes, false},
		{regexp.MustCompile(`docs/conventions|conventions\.md`), "cites the conventions document", false},
		{regexp.MustCompile(`(?:^|[^\w/.-])(?:` + regexp.QuoteMeta(platformNotes) + `|design)\.md`), "cites a document outside the repository (write docs/NAME.md#section)", true},
	}
)

// The outside names are put together from pieces: this file must name them,
// and spelled whole they would make it read as a citation to anyone who
// searches the repository for them (the scan itself skips this file).
var (
	sharedFolder  = strings.Join([]string{"..", "shar" + "ed"}, "/")
	sharedDocs    = strings.Join([]string{"shar" + "ed", "docs"}, "/")
	pulsarNotes   = "pulsar-" + "standalone.md"
	platformNotes = "lark-" + "platform"
)

// TestDocLinksResolve keeps the repository standing alone: every
// docs/NAME.md#section cited anywhere names a heading that exists, relative
// links between the docs resolve, and no file cites a document that is not
// in the repository.
func TestDocLinksResolve(t *testing.T) {
	root := repoRoot(t)
	problems, err := checkDocRefs(os.DirFS(root), func(p string) bool { return p == selfPath })
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Error(p)
	}
}

func TestCheckDocRefs(t *testing.T) {
	doc := "# Title\n\n## Rate limits\n\n### Gateway limit response\n\n## oapi-sdk-go v3.2.2 pitfalls\n\n" +
		"## Twice\n\n## Twice\n\n```\n## Not a heading\n```\n\nSee [limits](#rate-limits).\n"
	tests := map[string]struct {
		files map[string]string
		want  []string // substrings of the problems, in order; none means clean
	}{
		"existing sections": {
			files: map[string]string{"a.go": "// docs/x.md#rate-limits, docs/x.md#gateway-limit-response, docs/x.md"},
		},
		"punctuation and duplicate headings": {
			files: map[string]string{"a.go": "// docs/x.md#oapi-sdk-go-v322-pitfalls docs/x.md#twice docs/x.md#twice-1"},
		},
		"missing section": {
			files: map[string]string{"a.go": "// docs/x.md#rate-limit"},
			want:  []string{`a.go:1: docs/x.md has no section "rate-limit"`},
		},
		"heading inside a code fence": {
			files: map[string]string{"a.go": "// docs/x.md#not-a-heading"},
			want:  []string{`has no section "not-a-heading"`},
		},
		"missing doc": {
			files: map[string]string{"README.md": "text\n[y](docs/y.md)\n"},
			want:  []string{"README.md:2: docs/y.md does not exist"},
		},
		"relative links inside docs": {
			files: map[string]string{"docs/z.md": "# Z\n[x](x.md#twice) [self](#z) [bad](x.md#nope) [gone](w.md) [here](#nope)\n"},
			want:  []string{`docs/z.md:2: docs/x.md has no section "nope"`, "docs/z.md:2: docs/w.md does not exist", `docs/z.md:2: docs/z.md has no section "nope"`},
		},
		"shared folder": {
			files: map[string]string{"b.go": "package b\n\n// See " + sharedFolder + "/docs/notes.md.\n", "e.go": "// see " + pulsarNotes + "\n"},
			want:  []string{"b.go:3: cites the " + sharedFolder + " folder", "b.go:3: cites " + sharedDocs, "e.go:1: cites " + pulsarNotes},
		},
		"outside doc by bare name": {
			files: map[string]string{"c.go": "// limits (" + platformNotes + ".md §5)\n// design.md says so\n"},
			want:  []string{"c.go:1: cites a document outside", "c.go:2: cites a document outside"},
		},
		"bare name inside docs is a relative link": {
			files: map[string]string{"docs/" + platformNotes + ".md": "# L\n", "docs/z.md": "# Z\nsee [l](" + platformNotes + ".md#l) and " + platformNotes + ".md\n"},
		},
		"conventions": {
			files: map[string]string{"d.go": "// rules of docs/conventions"},
			want:  []string{"d.go:1: cites the conventions document"},
		},
		"skipped file": {
			files: map[string]string{"skip.go": "// " + sharedFolder + " docs/x.md#nope"},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			fsys := fstest.MapFS{"docs/x.md": {Data: []byte(doc)}}
			for p, data := range tt.files {
				fsys[p] = &fstest.MapFile{Data: []byte(data)}
			}
			got, err := checkDocRefs(fsys, func(p string) bool { return p == "skip.go" })
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d problems, want %d:\n%s", len(got), len(tt.want), strings.Join(got, "\n"))
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("problem %d = %q, want it to contain %q", i, got[i], w)
				}
			}
		})
	}
}

func TestSlug(t *testing.T) {
	tests := map[string]struct{ heading, want string }{
		"words":        {"Rate limits", "rate-limits"},
		"dots dropped": {"oapi-sdk-go v3.2.2 pitfalls", "oapi-sdk-go-v322-pitfalls"},
		"code spans":   {"The `uuid` field", "the-uuid-field"},
		"underscore":   {"url_verification", "url_verification"},
		"slash":        {"Per-chat / per-user", "per-chat--per-user"},
		"non-ASCII":    {"事件 概述", "事件-概述"},
		"trailing #":   {"Title ##", "title"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := slug(tt.heading); got != tt.want {
				t.Errorf("slug(%q) = %q, want %q", tt.heading, got, tt.want)
			}
		})
	}
}

// repoRoot is the directory of the go.mod declaring this module.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(b, []byte("module "+mod+"\n")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("no go.mod for %s above the test's directory", mod)
		}
		dir = parent
	}
}

// checkDocRefs scans every text file of fsys (but those skip reports) and
// returns one problem per broken or outside citation, as "file:line: what".
func checkDocRefs(fsys fs.FS, skip func(string) bool) ([]string, error) {
	sections := map[string]map[string]bool{} // doc path → its anchors; nil: no such file
	anchors := func(doc string) (map[string]bool, error) {
		if a, ok := sections[doc]; ok {
			return a, nil
		}
		b, err := fs.ReadFile(fsys, doc)
		if errors.Is(err, fs.ErrNotExist) {
			sections[doc] = nil
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		a := headingAnchors(b)
		sections[doc] = a
		return a, nil
	}
	var problems []string
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", ".tools", "node_modules", "__pycache__":
				return fs.SkipDir
			}
			return nil
		}
		if skip(p) || !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Size() > maxScanBytes {
			return nil
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		if bytes.IndexByte(b[:min(len(b), 8000)], 0) >= 0 {
			return nil // binary
		}
		inDocs := path.Dir(p) == "docs"
		check := func(line int, doc, anchor string) error {
			a, err := anchors(doc)
			switch {
			case err != nil:
				return err
			case a == nil:
				problems = append(problems, fmt.Sprintf("%s:%d: %s does not exist", p, line, doc))
			case anchor != "" && !a[anchor]:
				problems = append(problems, fmt.Sprintf("%s:%d: %s has no section %q", p, line, doc, anchor))
			}
			return nil
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(nil, maxScanBytes)
		for n := 1; sc.Scan(); n++ {
			line := sc.Text()
			for _, o := range outside {
				if inDocs && o.bare {
					continue
				}
				if o.re.MatchString(line) {
					problems = append(problems, fmt.Sprintf("%s:%d: %s", p, n, o.why))
				}
			}
			for _, m := range docRef.FindAllStringSubmatch(line, -1) {
				if err := check(n, m[1], m[2]); err != nil {
					return err
				}
			}
			if inDocs {
				for _, m := range mdLink.FindAllStringSubmatch(line, -1) {
					doc := p
					if m[1] != "" {
						doc = path.Join("docs", m[1])
					}
					if err := check(n, doc, m[2]); err != nil {
						return err
					}
				}
			}
		}
		return sc.Err()
	})
	return problems, err
}

// headingAnchors returns the anchors GitHub gives a Markdown file's ATX
// headings, fenced code blocks excluded; repeated headings get -1, -2, ….
func headingAnchors(md []byte) map[string]bool {
	anchors := map[string]bool{}
	seen := map[string]int{}
	fence := ""
	sc := bufio.NewScanner(bytes.NewReader(md))
	sc.Buffer(nil, maxScanBytes)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if fence != "" {
			if strings.HasPrefix(line, fence) {
				fence = ""
			}
			continue
		}
		if strings.HasPrefix(line, "```") || strings.HasPrefix(line, "~~~") {
			fence = line[:3]
			continue
		}
		level := len(line) - len(strings.TrimLeft(line, "#"))
		if level < 1 || level > 6 || len(line) == level || line[level] != ' ' {
			continue
		}
		s := slug(line[level+1:])
		if k := seen[s]; k > 0 {
			seen[s] = k + 1
			s = fmt.Sprintf("%s-%d", s, k)
		} else {
			seen[s] = 1
		}
		anchors[s] = true
	}
	return anchors
}

// slug is GitHub's heading anchor: lowercased, punctuation dropped (letters,
// digits, '_' and '-' kept), each space a hyphen; a closing run of '#' is
// not part of the heading.
func slug(heading string) string {
	heading = strings.TrimSpace(strings.TrimRight(strings.TrimSpace(heading), "#"))
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// testName is a Go test, fuzz target or benchmark named in backquotes.
var testName = regexp.MustCompile("`((?:Test|Fuzz|Benchmark)[A-Z]\\w*)`")

// The docs promise behaviour by naming the tests that hold it (the security
// model above all): every name must be a test that exists, so a renamed or
// deleted test cannot leave a promise behind without proof.
func TestDocsNameRealTests(t *testing.T) {
	root := repoRoot(t)
	defined := map[string]bool{}
	decl := regexp.MustCompile(`(?m)^func ((?:Test|Fuzz|Benchmark)\w*)\(`)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == ".tools" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range decl.FindAllSubmatch(b, -1) {
			defined[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	named := 0
	for _, doc := range docs {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range testName.FindAllSubmatch(b, -1) {
			named++
			if !defined[string(m[1])] {
				t.Errorf("%s names %s, which no _test.go file defines", filepath.Base(doc), m[1])
			}
		}
	}
	if named < 20 {
		t.Errorf("only %d tests named in docs/: the security model names more", named)
	}
}
