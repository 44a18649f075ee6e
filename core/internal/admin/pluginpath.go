package admin

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

// pathError is a swap path refused, with its HTTP status and reason.
type pathError struct {
	status int
	reason string
	msg    string
}

func (e *pathError) Error() string { return e.msg }

// realPath resolves every symlink and .. the way the kernel will, then
// makes the result absolute. Symlinks go first: cleaning "a/link/../b"
// lexically would name a different file than opening it does.
func realPath(p string) (string, error) {
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", err
	}
	return filepath.Abs(r)
}

// within reports whether path is strictly inside dir (both real paths).
func within(dir, path string) bool {
	rel, err := filepath.Rel(dir, path)
	if err != nil || filepath.IsAbs(rel) || rel == "." || rel == ".." ||
		strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return false
	}
	return true
}

// swapPath checks that a swap's file lies under the plugin directory (the
// configured one, else the directory of the plugin's configured path) once
// symlinks and .. are resolved, and returns its real path: the file that
// was checked is the one the cluster will run. Without this an operator
// token could execute any file on the host whose hash it knows.
func (s *Server) swapPath(name, p string) (string, *pathError) {
	dir, what := s.pluginDir, "admin.plugin_dir"
	if dir == "" {
		cp, ok := s.pluginPaths[name]
		if !ok {
			return "", &pathError{http.StatusForbidden, "path_not_allowed",
				fmt.Sprintf("plugin %s has no configured path to take a plugin directory from; set admin.plugin_dir", name)}
		}
		dir, what = filepath.Dir(cp), "the directory of plugin "+name+"'s configured path"
	}
	realDir, err := realPath(dir)
	if err != nil {
		return "", &pathError{http.StatusForbidden, "path_not_allowed",
			fmt.Sprintf("the plugin directory %s (%s) cannot be resolved: %v", dir, what, err)}
	}
	real, err := realPath(p)
	if err != nil {
		return "", &pathError{http.StatusBadRequest, "bad_path", fmt.Sprintf("path %q cannot be resolved: %v", p, err)}
	}
	if !within(realDir, real) {
		return "", &pathError{http.StatusForbidden, "path_not_allowed",
			fmt.Sprintf("path %q resolves to %s, which is not inside the plugin directory %s (%s)", p, real, realDir, what)}
	}
	fi, err := os.Stat(real)
	if err != nil || !fi.Mode().IsRegular() {
		return "", &pathError{http.StatusBadRequest, "bad_path", fmt.Sprintf("path %q is not a regular file", p)}
	}
	return real, nil
}
