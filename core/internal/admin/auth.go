package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Role is what a principal may do.
type Role string

const (
	// RoleNone is an authenticated principal without an admin role (a JWT
	// whose role claim names none): every endpoint answers 403.
	RoleNone Role = ""
	// RoleViewer may read: GET only.
	RoleViewer Role = "viewer"
	// RoleOperator may also change: swap, rollback, drain, enable/disable,
	// dead-letter replay and purge.
	RoleOperator Role = "operator"
)

// ParseRole reads "viewer" or "operator".
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleViewer, RoleOperator:
		return r, nil
	}
	return RoleNone, fmt.Errorf("role %q: want viewer or operator", s)
}

// allows reports whether r may make a request with this method. Reads are
// GET (and HEAD); every other method changes something, so a route added
// later is operator-only unless it is a GET.
func (r Role) allows(method string) bool {
	switch r {
	case RoleOperator:
		return true
	case RoleViewer:
		return method == http.MethodGet || method == http.MethodHead
	}
	return false
}

// Principal is who made a request.
type Principal struct {
	// Name is "token:<name>" for a static token, "jwt:<sub>" for a JWT.
	Name string
	Role Role
}

// Token is a static bearer token.
type Token struct {
	// Name is logged as the principal.
	Name   string
	Secret string
	Role   Role
}

// Verifier authenticates bearer tokens that are not static tokens (JWTs).
type Verifier interface {
	Verify(ctx context.Context, token string) (Principal, error)
}

type principalKey struct{}

// PrincipalFrom returns the request's authenticated principal.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// staticToken is a Token kept as a digest: comparing fixed-size digests in
// constant time leaks neither the tokens' contents nor their lengths.
type staticToken struct {
	digest [sha256.Size]byte
	name   string
	role   Role
}

func hashTokens(tokens []Token) ([]staticToken, error) {
	out := make([]staticToken, 0, len(tokens))
	for _, t := range tokens {
		if t.Secret == "" || t.Name == "" {
			return nil, errors.New("admin API: every static token needs a name and a secret")
		}
		if t.Role != RoleViewer && t.Role != RoleOperator {
			return nil, fmt.Errorf("admin API: token %s: role %q: want viewer or operator", t.Name, t.Role)
		}
		out = append(out, staticToken{digest: sha256.Sum256([]byte(t.Secret)), name: t.Name, role: t.Role})
	}
	return out, nil
}

// errUnauthorized is a missing or malformed Authorization header.
var errUnauthorized = errors.New("missing or malformed bearer token (want Authorization: Bearer TOKEN)")

// bearer extracts the token of an Authorization header. The scheme is
// case-insensitive (RFC 7235 section 2.1, RFC 6750 section 2.1).
func bearer(h string) (string, bool) {
	scheme, rest, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok := strings.TrimLeft(rest, " ")
	if tok == "" || strings.ContainsAny(tok, " \t") {
		return "", false
	}
	return tok, true
}

// authenticate finds the request's principal: a static token, else a JWT.
func (s *Server) authenticate(r *http.Request) (Principal, error) {
	tok, ok := bearer(r.Header.Get("Authorization"))
	if !ok {
		return Principal{}, errUnauthorized
	}
	d := sha256.Sum256([]byte(tok))
	var found *staticToken
	// Every token is compared, so the time taken does not tell which one
	// matched.
	for i := range s.tokens {
		if subtle.ConstantTimeCompare(d[:], s.tokens[i].digest[:]) == 1 {
			found = &s.tokens[i]
		}
	}
	if found != nil {
		return Principal{Name: "token:" + found.name, Role: found.role}, nil
	}
	if s.jwt == nil {
		return Principal{}, errors.New("wrong bearer token")
	}
	p, err := s.jwt.Verify(r.Context(), tok)
	if err != nil {
		return Principal{}, fmt.Errorf("bearer token rejected: %w", err)
	}
	return p, nil
}

// Authenticate finds the principal of a request carrying the API's bearer
// credentials; the console uses it to admit a token at login and to serve
// bearer requests directly, so both share the API's authentication.
func (s *Server) Authenticate(r *http.Request) (Principal, error) { return s.authenticate(r) }
