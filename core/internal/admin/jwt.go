package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// JWTConfig configures JWT bearer tokens.
type JWTConfig struct {
	// JWKSFile or JWKSURL holds the verification keys (one of them).
	JWKSFile string
	JWKSURL  string
	// Issuer and Audience must match the token's iss and aud.
	Issuer   string
	Audience string
	// RoleClaim names the claim holding the role (default "role").
	RoleClaim string
	// HTTPClient fetches JWKSURL (default: a client with a 10 s timeout).
	HTTPClient *http.Client
	// RefreshInterval re-reads JWKSURL (default 1h). A token naming an
	// unknown key also triggers a refresh, at most every 5 minutes.
	RefreshInterval time.Duration
}

// jwtAlgorithms are the only accepted algorithms: asymmetric ones, so a
// token MACed with the public key as an HMAC secret (alg confusion) or
// with alg "none" is refused before any key is looked up.
var jwtAlgorithms = []string{"RS256", "ES256", "EdDSA"}

// jwtLeeway absorbs clock skew between the issuer and the core for exp,
// nbf and iat.
const jwtLeeway = 30 * time.Second

// maxJWTBytes bounds a token before it is parsed.
const maxJWTBytes = 16 << 10

// maxJWKSBytes bounds a JWK Set file.
const maxJWKSBytes = 1 << 20

// JWT verifies JWT bearer tokens with golang-jwt against a JWK Set read by
// keyfunc.
type JWT struct {
	keys      keyfunc.Keyfunc
	parser    *jwt.Parser
	roleClaim string
}

// NewJWT reads the JWK Set (the file, or the URL: a failed first fetch is
// logged and retried, so an identity provider outage does not stop the
// core). ctx ends the URL's refresh goroutine.
func NewJWT(ctx context.Context, c JWTConfig, logger *slog.Logger) (*JWT, error) {
	if (c.JWKSFile == "") == (c.JWKSURL == "") {
		return nil, errors.New("admin API JWT: give exactly one of a JWKS file or URL")
	}
	if c.Issuer == "" || c.Audience == "" {
		return nil, errors.New("admin API JWT: issuer and audience are required")
	}
	if c.RoleClaim == "" {
		c.RoleClaim = "role"
	}
	var (
		keys keyfunc.Keyfunc
		err  error
	)
	if c.JWKSFile != "" {
		keys, err = jwksFromFile(c.JWKSFile)
	} else {
		client := c.HTTPClient
		if client == nil {
			client = &http.Client{Timeout: 10 * time.Second, CheckRedirect: httpsOnly}
		}
		keys, err = keyfunc.NewDefaultOverrideCtx(ctx, []string{c.JWKSURL}, keyfunc.Override{
			Client:          client,
			RefreshInterval: c.RefreshInterval,
			RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
				return func(ctx context.Context, err error) {
					logger.WarnContext(ctx, "reading the admin JWK Set", "component", "admin", "url", u, "err", err)
				}
			},
			// An unknown kid refreshes at most every 5 minutes, and a
			// request never waits long for that turn: forged kids cannot
			// hammer the identity provider or pile up requests.
			RefreshUnknownKID: rate.NewLimiter(rate.Every(5*time.Minute), 1),
			RateLimitWaitMax:  time.Second,
		})
		if err != nil {
			err = fmt.Errorf("admin API JWT: reading %s: %w", c.JWKSURL, err)
		}
	}
	if err != nil {
		return nil, err
	}
	return &JWT{
		keys: keys,
		parser: jwt.NewParser(
			jwt.WithValidMethods(jwtAlgorithms),
			jwt.WithIssuer(c.Issuer),
			jwt.WithAudience(c.Audience),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(jwtLeeway),
		),
		roleClaim: c.RoleClaim,
	}, nil
}

// httpsOnly refuses a redirect of the JWKS URL to plain HTTP, where the
// keys could be swapped in transit.
func httpsOnly(req *http.Request, via []*http.Request) error {
	if req.URL.Scheme != "https" {
		return fmt.Errorf("refusing a redirect to %s: the JWK Set must come over https", req.URL.Redacted())
	}
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	return nil
}

func jwksFromFile(path string) (keyfunc.Keyfunc, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("admin API JWT: reading the JWKS file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("admin API JWT: reading the JWKS file: %w", err)
	}
	if len(b) > maxJWKSBytes {
		return nil, fmt.Errorf("admin API JWT: JWKS file %s is larger than %d bytes", path, maxJWKSBytes)
	}
	k, err := keyfunc.NewJWKSetJSON(b)
	if err != nil {
		return nil, fmt.Errorf("admin API JWT: decoding the JWKS file %s: %w", path, err)
	}
	ks, err := k.Storage().KeyReadAll(context.Background())
	if err != nil || len(ks) == 0 {
		return nil, fmt.Errorf("admin API JWT: JWKS file %s holds no usable key", path)
	}
	return k, nil
}

// Verify checks the token's signature, algorithm, exp, nbf, iat, iss and
// aud, and reads its sub and role.
func (j *JWT) Verify(ctx context.Context, raw string) (Principal, error) {
	if len(raw) > maxJWTBytes {
		return Principal{}, errors.New("token too long")
	}
	claims := jwt.MapClaims{}
	if _, err := j.parser.ParseWithClaims(raw, claims, j.keys.KeyfuncCtx(ctx)); err != nil {
		return Principal{}, err
	}
	sub, _ := claims.GetSubject()
	if sub == "" {
		// Every change is logged with its principal.
		return Principal{}, errors.New("token has no sub")
	}
	return Principal{Name: "jwt:" + sub, Role: roleOf(claims[j.roleClaim])}, nil
}

// roleOf reads a role claim: a string, or a list whose highest role wins.
// Anything else is no role.
func roleOf(v any) Role {
	var list []any
	switch x := v.(type) {
	case string:
		list = []any{x}
	case []any:
		list = x
	}
	best := RoleNone
	for _, e := range list {
		s, _ := e.(string)
		switch Role(s) {
		case RoleOperator:
			return RoleOperator
		case RoleViewer:
			best = RoleViewer
		}
	}
	return best
}
