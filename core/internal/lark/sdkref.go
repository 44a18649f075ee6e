package lark

import (
	"context"
	"net/http"

	larkcore "github.com/larksuite/oapi-sdk-go/v3/core"
	"github.com/larksuite/oapi-sdk-go/v3/core/httpserverext"
	larkevent "github.com/larksuite/oapi-sdk-go/v3/event"
	"github.com/larksuite/oapi-sdk-go/v3/event/dispatcher"
	larkim "github.com/larksuite/oapi-sdk-go/v3/service/im/v1"
)

// SDKReference is oapi-sdk-go's own webhook path — httpserverext in front of
// an EventDispatcher — doing what a bot built on the SDK does inline for each
// event: parse the body, decrypt it, verify the signature, unmarshal the
// typed im.message.receive_v1 event and run a handler (here one that only
// counts, and sends no reply). It exists as a reference point for `larkway
// bench`: larkway's ingest is measured beside it on the same load. It lives
// here because only this package may import the SDK; no SDK type leaves it.
// It is safe for concurrent use.
type SDKReference struct {
	d       *dispatcher.EventDispatcher
	handler http.HandlerFunc
}

// NewSDKReference builds the reference for one app. handled, if not nil, is
// called once for every message event the dispatcher hands to its handler.
// The SDK logs only errors.
func NewSDKReference(verificationToken, encryptKey string, handled func()) *SDKReference {
	d := dispatcher.NewEventDispatcher(verificationToken, encryptKey).
		OnP2MessageReceiveV1(func(context.Context, *larkim.P2MessageReceiveV1) error {
			if handled != nil {
				handled()
			}
			return nil
		})
	h := httpserverext.NewEventHandlerFunc(d, larkevent.WithLogLevel(larkcore.LogLevelError))
	return &SDKReference{d: d, handler: h}
}

// ServeHTTP is httpserverext's handler: read the body, dispatch, write the
// answer (200 {"msg":"success"} once handled, 500 on any failure).
func (r *SDKReference) ServeHTTP(w http.ResponseWriter, req *http.Request) { r.handler(w, req) }

// Handle runs the dispatcher on one request without HTTP (the per-event
// work alone: parse, decrypt, verify, unmarshal, handler) and returns the
// HTTP status it would answer.
func (r *SDKReference) Handle(ctx context.Context, header http.Header, body []byte) int {
	resp := r.d.Handle(ctx, &larkevent.EventReq{Header: header, Body: body, RequestURI: "/webhook/event"})
	return resp.StatusCode
}
