package pluginhost

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
)

// File pins one more file a plugin runs beside its executable — typically
// the script an interpreter is given, or a module that script imports.
type File struct {
	Path   string
	SHA256 string
}

// allowedEnv are the core's own variables a plugin inherits: enough for a
// runtime to find its tools, locale, time zone and temporary directory,
// nothing that could carry a secret. go-plugin adds its handshake variables
// itself; anything else a plugin needs is listed in its Env.
var allowedEnv = map[string]bool{"PATH": true, "HOME": true, "LANG": true, "TZ": true, "TMPDIR": true}

// pluginEnv is the whole environment a plugin starts with: the allow-listed
// variables of the core, then each entry of extra — KEY=VALUE sets KEY, a
// bare KEY passes the core's value of KEY through (if it is set).
func pluginEnv(extra []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if allowedEnv[k] || strings.HasPrefix(k, "LC_") {
			env = append(env, kv)
		}
	}
	for _, e := range extra {
		if strings.Contains(e, "=") {
			env = append(env, e)
		} else if v, ok := os.LookupEnv(e); ok {
			env = append(env, e+"="+v)
		}
	}
	return env
}

var sha256RE = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)

// staged is what one launch executes.
type staged struct {
	// dir is the private directory holding the verified copies ("" when
	// nothing is pinned); the instance removes it on Close.
	dir string
	// exe is the file to execute, and args its arguments, every argument
	// naming a pinned file rewritten to that file's verified copy.
	exe  string
	args []string
}

func (s staged) cleanup() {
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
}

// stage verifies every pinned file and prepares what to execute.
//
// Why copies: a pinned file is read once — hashed while it is copied into
// a private 0700 directory the core creates for this launch — and the copy
// is what runs. Hashing a file by path and then executing that path leaves
// a window to rename another file into place; hashing an open descriptor
// and executing /proc/self/fd/N closes that window for the executable
// only: an in-place write to the same inode between the hash and the exec
// still runs unverified bytes, and an interpreter given the script's path
// (or /dev/fd/N, which also breaks its imports of sibling modules) reads it
// again later. A copy nobody else was handed is immune to both, for the
// executable and for scripts alike. The copies keep their absolute paths
// under the directory, so pinned modules stay beside the pinned script that
// imports them; argv[0] stays the configured path, so an interpreter that
// finds its installation from argv[0] (Python and its venvs do) still does.
// An executable that finds its libraries from its own location ($ORIGIN
// run paths, /proc/self/exe) cannot run from a copy: pin its scripts in
// files and leave its sha256 empty (docs/operations.md says so).
func stage(cfg Config) (st staged, err error) {
	st = staged{exe: cfg.Path, args: cfg.Args}
	if cfg.SHA256 == "" && len(cfg.Files) == 0 {
		return st, nil
	}
	if cfg.SHA256 != "" && !sha256RE.MatchString(cfg.SHA256) {
		return st, fmt.Errorf("sha256 %q of %s is not 64 hex digits", cfg.SHA256, cfg.Path)
	}
	for _, f := range cfg.Files {
		if f.Path == "" {
			return st, errors.New("a pinned file has no path")
		}
		if !sha256RE.MatchString(f.SHA256) {
			return st, fmt.Errorf("sha256 %q of pinned file %s is not 64 hex digits", f.SHA256, f.Path)
		}
	}
	st.dir, err = os.MkdirTemp("", "larkway-plugin-")
	if err != nil {
		return st, fmt.Errorf("creating the private copy directory: %w", err)
	}
	defer func() {
		if err != nil {
			st.cleanup()
			st.dir = ""
		}
	}()
	copies := map[string]string{} // absolute original path → copy
	place := func(path, sum string, mode os.FileMode) (string, error) {
		abs, err := filepath.Abs(path)
		if err != nil {
			return "", fmt.Errorf("resolving %s: %w", path, err)
		}
		if _, dup := copies[abs]; dup {
			return "", fmt.Errorf("%s is pinned twice", path)
		}
		dst := filepath.Join(st.dir, "root", abs)
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return "", fmt.Errorf("creating the private copy of %s: %w", path, err)
		}
		if err := copyVerified(path, dst, sum, mode); err != nil {
			return "", err
		}
		copies[abs] = dst
		return dst, nil
	}
	if cfg.SHA256 != "" {
		// Without a slash the core runs what $PATH names, so that is the
		// file pinned (larkway plugin pin does the same lookup).
		path := cfg.Path
		if !strings.ContainsRune(path, '/') {
			if path, err = exec.LookPath(cfg.Path); err != nil {
				return st, fmt.Errorf("finding %s: %w", cfg.Path, err)
			}
		}
		if st.exe, err = place(path, cfg.SHA256, 0o500); err != nil {
			return st, err
		}
	}
	for _, f := range cfg.Files {
		if _, err := place(f.Path, f.SHA256, 0o400); err != nil {
			return st, err
		}
	}
	st.args = make([]string, len(cfg.Args))
	for i, a := range cfg.Args {
		st.args[i] = a
		if abs, err := filepath.Abs(a); err == nil && a != "" {
			if c, ok := copies[abs]; ok {
				st.args[i] = c
			}
		}
	}
	return st, nil
}

// copyVerified copies src to dst (created, mode) while hashing it, and
// fails with ErrChecksum, naming src and both sums, unless the bytes copied
// hash to want.
func copyVerified(src, dst, want string, mode os.FileMode) error {
	in, err := openRegular(src)
	if err != nil {
		return err
	}
	defer in.Close()
	h := sha256.New()
	// Holding ForkLock for reading keeps the process from forking while the
	// copy is open for writing: a child forked meanwhile (another plugin's
	// launch) would hold the write descriptor until its own exec, and
	// executing the copy would then fail with ETXTBSY (golang/go#22315).
	syscall.ForkLock.RLock()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err == nil {
		_, err = io.Copy(io.MultiWriter(out, h), in)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return fmt.Errorf("copying %s: %w", src, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); !strings.EqualFold(got, want) {
		return fmt.Errorf("%w: file %s: expected sha256 %s, actual %s", ErrChecksum, src, strings.ToLower(want), got)
	}
	return nil
}

// openRegular opens path for reading, refusing anything but a regular file
// (a directory, a device, or a FIFO that would block the open forever).
func openRegular(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		kind := "not a regular file"
		if fi.IsDir() {
			kind = "a directory"
		}
		return nil, fmt.Errorf("%s is %s", path, kind)
	}
	return f, nil
}

// FileSHA256 returns the hex SHA-256 of a regular file, for pinning.
func FileSHA256(path string) (string, error) {
	f, err := openRegular(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err // an *os.PathError: it names the file
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
