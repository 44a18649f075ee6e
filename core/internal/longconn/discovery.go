package longconn

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// EndpointPath is the discovery endpoint, relative to the OpenAPI origin.
const EndpointPath = "/callback/ws/endpoint"

// maxDiscoveryBody bounds the discovery response we read.
const maxDiscoveryBody = 1 << 20

// ClientConfig is what Lark sends with the endpoint and in pongs. All
// values are seconds. Only PingInterval is used (clamped); the reconnect
// hints are logged: our backoff is Config.ReconnectMin/Max.
type ClientConfig struct {
	ReconnectCount    int `json:"ReconnectCount"`
	ReconnectInterval int `json:"ReconnectInterval"`
	ReconnectNonce    int `json:"ReconnectNonce"`
	PingInterval      int `json:"PingInterval"`
}

// endpoint is one discovered connection URL.
type endpoint struct {
	url       string
	connID    string // device_id in the URL
	serviceID int32  // service_id in the URL, echoed in pings
	config    *ClientConfig
}

type discoveryResponse struct {
	Code int    `json:"code"`
	Msg  string `json:"msg"`
	Data *struct {
		URL          string        `json:"URL"`
		ClientConfig *ClientConfig `json:"ClientConfig"`
	} `json:"data"`
}

// discover asks Lark for a connection URL. The request is bounded by
// DiscoveryTimeout; the secret travels only in the body and is never logged.
func (c *Client) discover(ctx context.Context) (*endpoint, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.DiscoveryTimeout)
	defer cancel()
	body, err := json.Marshal(map[string]string{"AppID": c.cfg.AppID, "AppSecret": c.cfg.AppSecret})
	if err != nil {
		return nil, &DiscoveryError{Msg: "encoding the request", Err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(c.cfg.BaseURL, "/")+EndpointPath, bytes.NewReader(body))
	if err != nil {
		return nil, &DiscoveryError{Msg: "building the request", Err: err, Permanent: true}
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("locale", "zh")
	resp, err := c.httpc.Do(req)
	if err != nil {
		return nil, &DiscoveryError{Msg: "POST " + EndpointPath, Err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &DiscoveryError{HTTPStatus: resp.StatusCode}
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxDiscoveryBody))
	if err != nil {
		return nil, &DiscoveryError{HTTPStatus: resp.StatusCode, Msg: "reading the response", Err: err}
	}
	var dr discoveryResponse
	if err := json.Unmarshal(raw, &dr); err != nil {
		return nil, &DiscoveryError{HTTPStatus: resp.StatusCode, Msg: "decoding the response", Err: err}
	}
	switch dr.Code {
	case codeOK:
	case codeSystemBusy, codeInternalError:
		return nil, &DiscoveryError{HTTPStatus: resp.StatusCode, Code: dr.Code, Msg: dr.Msg}
	default:
		return nil, &DiscoveryError{HTTPStatus: resp.StatusCode, Code: dr.Code, Msg: dr.Msg, Permanent: true}
	}
	if dr.Data == nil || dr.Data.URL == "" {
		// Lark's SDK dereferences this and panics; it is a server hiccup.
		return nil, &DiscoveryError{HTTPStatus: resp.StatusCode, Msg: "success without an endpoint URL (null data)"}
	}
	u, err := url.Parse(dr.Data.URL)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		return nil, &DiscoveryError{HTTPStatus: resp.StatusCode, Msg: fmt.Sprintf("endpoint URL is not a ws(s) URL (scheme %q)", schemeOf(u))}
	}
	q := u.Query()
	sid, _ := strconv.ParseInt(q.Get("service_id"), 10, 32)
	return &endpoint{url: dr.Data.URL, connID: q.Get("device_id"), serviceID: int32(sid), config: dr.Data.ClientConfig}, nil
}

func schemeOf(u *url.URL) string {
	if u == nil {
		return ""
	}
	return u.Scheme
}
