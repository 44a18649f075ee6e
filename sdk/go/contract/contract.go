// Package contract holds the constants both sides of the plugin protocol must
// agree on: the go-plugin handshake and the names under which services are
// dispensed. The core's plugin host and every SDK use these values; a plugin
// in another language copies them (see sdk/README.md).
package contract

import "strings"

const (
	// ContractVersion is the plugin contract package version (larkway.plugin.v1).
	ContractVersion = "v1"
	// ProtocolVersion is go-plugin's application protocol version; it changes
	// only with a new contract package.
	ProtocolVersion = 1
	// MagicCookieKey and MagicCookieValue are go-plugin's handshake cookie: the
	// core sets the variable when it launches a plugin, and a plugin started any
	// other way refuses to run.
	MagicCookieKey   = "LARKWAY_PLUGIN_MAGIC_COOKIE"
	MagicCookieValue = "d2f1c5b0-larkway-plugin-v1"
	// PluginName is the key under which the handler service is dispensed.
	PluginName = "handler"
	// HealthServiceName is the gRPC health service name go-plugin checks.
	HealthServiceName = "plugin"
)

// CommandName returns the command a message text starts with ("/deploy" for
// "@Bot /Deploy prod"), lowercased, skipping leading @mentions, and the rest
// of the text. The core matches subscriptions and the SDKs route handlers with
// this one rule, so both agree on what is a command.
func CommandName(text string) (name, rest string, ok bool) {
	s := strings.TrimSpace(text)
	for strings.HasPrefix(s, "@") {
		i := strings.IndexAny(s, " \t\n")
		if i < 0 {
			return "", "", false
		}
		s = strings.TrimSpace(s[i:])
	}
	if len(s) < 2 || s[0] != '/' {
		return "", "", false
	}
	name, rest, _ = strings.Cut(s, " ")
	return strings.ToLower(strings.TrimSpace(name)), strings.TrimSpace(rest), true
}
