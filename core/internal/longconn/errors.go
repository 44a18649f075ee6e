package longconn

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
)

// ErrPermanent classes failures that retrying cannot fix: the endpoint
// refused the app (wrong credentials, not a self-built app, …), or the
// handshake was forbidden or hit the 50-connection limit. A connection slot
// that gets one stops; use IsPermanent.
var ErrPermanent = errors.New("permanent long-connection failure")

// IsPermanent reports whether err (or an error it wraps) is permanent.
func IsPermanent(err error) bool { return errors.Is(err, ErrPermanent) }

// Endpoint discovery response codes (SDK ws/const.go).
const (
	codeOK            = 0
	codeSystemBusy    = 1
	codeInternalError = 1000040343
)

// DiscoveryError is a failed POST /callback/ws/endpoint. Codes 1 (system
// busy) and 1000040343 (internal error), non-200 HTTP statuses, unreadable
// bodies and a success without an endpoint are retryable; any other code is
// permanent.
type DiscoveryError struct {
	HTTPStatus int    // 0 when the request itself failed
	Code       int    // Lark's body code, when there was a body
	Msg        string // Lark's msg, or what went wrong
	Permanent  bool
	Err        error // the transport or decoding error, if any
}

func (e *DiscoveryError) Error() string {
	switch {
	case e.Err != nil:
		return fmt.Sprintf("discovering the long-connection endpoint: %s: %v", e.Msg, e.Err)
	case e.HTTPStatus != http.StatusOK:
		return fmt.Sprintf("discovering the long-connection endpoint: HTTP %d", e.HTTPStatus)
	default:
		return fmt.Sprintf("discovering the long-connection endpoint: code %d: %s", e.Code, e.Msg)
	}
}

func (e *DiscoveryError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrPermanent) hold for permanent failures.
func (e *DiscoveryError) Is(target error) bool { return target == ErrPermanent && e.Permanent }

// Handshake response headers and values (SDK ws/const.go).
const (
	headerHandshakeStatus  = "Handshake-Status"
	headerHandshakeMsg     = "Handshake-Msg"
	headerHandshakeAuthErr = "Handshake-Autherrcode"

	handshakeForbidden  = 403
	handshakeAuthFailed = 514
	authExceedConnLimit = 1000040350
)

// HandshakeError is a WebSocket upgrade Lark refused. It is permanent when
// Handshake-Status is 403 (forbidden) or Handshake-Autherrcode is 1000040350
// (more than 50 connections for the app). Any other refusal — 514 with
// another auth code included: the ticket in the URL may have expired, and the
// next attempt discovers a new one — is retried, as Lark's SDK does.
type HandshakeError struct {
	HTTPStatus  int
	Status      int // Handshake-Status
	AuthErrCode int // Handshake-Autherrcode
	Msg         string
	Permanent   bool
}

func (e *HandshakeError) Error() string {
	s := fmt.Sprintf("long-connection handshake refused: HTTP %d, Handshake-Status %d", e.HTTPStatus, e.Status)
	if e.AuthErrCode != 0 {
		s += fmt.Sprintf(", Handshake-Autherrcode %d", e.AuthErrCode)
	}
	if e.AuthErrCode == authExceedConnLimit {
		s += fmt.Sprintf(" (the app already has %d connections)", MaxConnections)
	}
	if e.Msg != "" {
		s += ": " + e.Msg
	}
	return s
}

// Is makes errors.Is(err, ErrPermanent) hold for permanent refusals.
func (e *HandshakeError) Is(target error) bool { return target == ErrPermanent && e.Permanent }

// handshakeError classifies a non-101 handshake response.
func handshakeError(resp *http.Response) *HandshakeError {
	status, _ := strconv.Atoi(resp.Header.Get(headerHandshakeStatus))
	auth, _ := strconv.Atoi(resp.Header.Get(headerHandshakeAuthErr))
	return &HandshakeError{
		HTTPStatus:  resp.StatusCode,
		Status:      status,
		AuthErrCode: auth,
		Msg:         resp.Header.Get(headerHandshakeMsg),
		Permanent:   status == handshakeForbidden || auth == authExceedConnLimit,
	}
}
