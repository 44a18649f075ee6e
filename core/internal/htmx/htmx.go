// Package htmx embeds htmx, the one front-end library of the console and
// the playground: version 2.0.4, taken from the npm registry with
// `npm pack htmx.org@2.0.4` (dist/htmx.min.js, sha256
// e209dda5c8235479f3166defc7750e1dbcd5a5c1808b7792fc2e6733768fb447).
// Served from the binary: the pages work without a CDN.
package htmx

import (
	_ "embed"
	"net/http"
)

// Version is the embedded htmx's version; File is the name Handler serves it
// relative to its mount point.
const (
	Version = "2.0.4"
	File    = "htmx-2.0.4.min.js"
)

//go:embed htmx-2.0.4.min.js
var js []byte

// JS is the minified htmx.
func JS() []byte { return js }

// Handler serves the script, cacheable (its name carries its version).
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		w.Header().Set("Cache-Control", "public, max-age=86400, immutable")
		_, _ = w.Write(js)
	})
}
