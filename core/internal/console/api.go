package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/larkway/larkway/core/internal/cluster"
	"github.com/larkway/larkway/core/internal/manager"
)

// apiResult is one admin API answer.
type apiResult struct {
	Status int
	Body   []byte
}

// OK reports a 2xx answer.
func (a apiResult) OK() bool { return a.Status >= 200 && a.Status < 300 }

// Err is the API's error message, or the status when the body has none.
func (a apiResult) Err() string {
	var e struct {
		Error  string `json:"error"`
		Reason string `json:"reason"`
	}
	if json.Unmarshal(a.Body, &e) == nil && e.Error != "" {
		return e.Error
	}
	return fmt.Sprintf("admin API answered %d %s", a.Status, http.StatusText(a.Status))
}

// Pretty is the body indented.
func (a apiResult) Pretty() string {
	var b bytes.Buffer
	if json.Indent(&b, a.Body, "", "  ") != nil {
		return string(a.Body)
	}
	return b.String()
}

// recorder is the response of an in-process API call.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}
func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}

// call makes an admin API request as the caller of r: same principal,
// remote address and TLS state, so the API authorizes and logs it as if the
// caller had made it.
func (c *Console) call(r *http.Request, method, path string, body any) apiResult {
	var rd bytes.Buffer
	if body != nil {
		_ = json.NewEncoder(&rd).Encode(body)
	}
	req, err := http.NewRequestWithContext(r.Context(), method, path, &rd)
	if err != nil {
		return apiResult{Status: http.StatusBadRequest, Body: []byte(`{"error":"bad request path"}`)}
	}
	req.Header.Set("Authorization", "Bearer "+principalOf(r).bearer)
	req.Header.Set("Content-Type", "application/json")
	req.RemoteAddr, req.TLS, req.Host = r.RemoteAddr, r.TLS, r.Host
	rec := &recorder{header: http.Header{}}
	c.deps.API.ServeHTTP(rec, req)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return apiResult{Status: rec.status, Body: rec.body.Bytes()}
}

// pluginView mirrors the API's view of a plugin across replicas.
type pluginView struct {
	Name        string                    `json:"name"`
	Desired     *cluster.Desired          `json:"desired,omitempty"`
	Replicas    map[string]manager.Status `json:"replicas"`
	DeadLetters int                       `json:"dead_letters"`
}

type replicaView struct {
	ID          string            `json:"id"`
	Version     string            `json:"version"`
	State       string            `json:"state"`
	Heartbeat   time.Time         `json:"heartbeat"`
	ApplyErrors map[string]string `json:"apply_errors,omitempty"`
}

type pluginList struct {
	Plugins  []pluginView  `json:"plugins"`
	Replicas []replicaView `json:"replicas"`
}

func (c *Console) plugins(r *http.Request) (pluginList, apiResult) {
	var l pluginList
	res := c.call(r, http.MethodGet, "/v1/plugins", nil)
	if res.OK() {
		if err := json.Unmarshal(res.Body, &l); err != nil {
			return l, apiResult{Status: http.StatusBadGateway, Body: []byte(`{"error":"decoding the plugin list"}`)}
		}
	}
	return l, res
}
