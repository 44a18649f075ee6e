package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/larkway/larkway/core/internal/cluster"
	"github.com/larkway/larkway/core/internal/dispatch"
	"github.com/larkway/larkway/core/internal/shadow"
)

// reportLimit is how many shadow records the plugin page shows, newest
// first (the API's report has them all).
const reportLimit = 20

// statsRow is one version's deliveries on the plugin page.
type statsRow struct {
	Role, Version                            string
	Deliveries, Errors, Retries, DeadLetters int64
	ErrorRate, MeanLatency                   string
}

func newStatsRow(role, version string, s dispatch.VersionStats) statsRow {
	row := statsRow{Role: role, Version: version, Deliveries: s.Deliveries, Errors: s.Errors, Retries: s.Retries,
		DeadLetters: s.DeadLetters, ErrorRate: percent(s.ErrorRate()), MeanLatency: "–"}
	if s.Deliveries > 0 {
		row.MeanLatency = fmt.Sprintf("%d ms", s.LatencyMS/s.Deliveries)
	}
	return row
}

func percent(f float64) string { return fmt.Sprintf("%.1f %%", f*100) }

// releaseData is a plugin's canary or shadow as its page shows it.
type releaseData struct {
	// Err is set when the release could not be read; the rest is empty.
	Err     string
	Running bool
	Mode    string
	// Versions are the candidate's (and the stable version's) manifest
	// versions over the replicas running the release.
	Version, StableVersion string
	Path, SHA256           string
	Split, Policy          string
	Started                time.Time
	States                 string
	Stats                  []statsRow
	// PerReplica are the same stats on each replica running the release.
	PerReplica      []replicaStats
	ErrorRate       string
	Verdict, Reason string
	Last            *lastRelease
	Shadow          *shadowData
}

type lastRelease struct {
	Mode, Path, Result, Reason string
	At                         time.Time
	Stats                      statsRow
}

// replicaStats is a release on one replica.
type replicaStats struct {
	Replica, State    string
	Stable, Candidate statsRow
}

// shadowData is the shadow report: its summary and the newest records.
type shadowData struct {
	Err     string
	Summary shadow.Summary
	Records []shadowRow
}

type shadowRow struct {
	shadow.Record
	StableActions, CandidateActions []string
}

// splitText says which chats a split selects.
func splitText(s dispatch.Split) string {
	var parts []string
	if s.Percent > 0 {
		parts = append(parts, fmt.Sprintf("%g %% of chats", s.Percent))
	}
	if len(s.Chats) > 0 {
		parts = append(parts, "chats "+strings.Join(s.Chats, ", "))
	}
	if len(parts) == 0 {
		return "no chats"
	}
	return strings.Join(parts, " and ")
}

// policyText says when a canary is promoted or rolled back.
func policyText(r *cluster.Release) string {
	if r.Mode != dispatch.ModeCanary {
		return "never promoted; stopped by hand"
	}
	promote := "promoted by hand"
	switch {
	case r.PromoteAfterDeliveries > 0 && r.PromoteAfterDuration != "":
		promote = fmt.Sprintf("promoted after %d deliveries or %s", r.PromoteAfterDeliveries, r.PromoteAfterDuration)
	case r.PromoteAfterDeliveries > 0:
		promote = fmt.Sprintf("promoted after %d deliveries", r.PromoteAfterDeliveries)
	case r.PromoteAfterDuration != "":
		promote = "promoted after " + r.PromoteAfterDuration
	}
	return fmt.Sprintf("%s; rolled back above %s errors once it had %d deliveries", promote, percent(r.MaxErrorRate), r.MinDeliveries)
}

// actionTexts are actions as one line of JSON each.
func actionTexts(actions []json.RawMessage) []string {
	out := make([]string, len(actions))
	for i, a := range actions {
		var b bytes.Buffer
		if json.Compact(&b, a) != nil {
			out[i] = string(a)
			continue
		}
		out[i] = b.String()
	}
	return out
}

// release reads name's release, and the shadow report when the release is
// (or the last one was) a shadow.
func (c *Console) release(r *http.Request, name string) releaseData {
	res := c.call(r, http.MethodGet, "/v1/plugins/"+url.PathEscape(name)+"/release", nil)
	if !res.OK() {
		return releaseData{Err: res.Err()}
	}
	var v cluster.ReleaseView
	if err := json.Unmarshal(res.Body, &v); err != nil {
		return releaseData{Err: "decoding the release: " + err.Error()}
	}
	var d releaseData
	if l := v.Last; l != nil {
		d.Last = &lastRelease{Mode: string(l.Mode), Path: l.Spec.Path, Result: l.Result, Reason: l.Reason, At: l.At,
			Stats: newStatsRow(string(l.Mode), "", l.Stats)}
	}
	shadowMode := d.Last != nil && d.Last.Mode == string(dispatch.ModeShadow)
	if rel := v.Release; rel != nil {
		d.Running, d.Mode = true, string(rel.Mode)
		d.Path, d.SHA256, d.Started = rel.Spec.Path, rel.Spec.SHA256, rel.Started
		d.Split, d.Policy = splitText(rel.Split), policyText(rel)
		var versions, states []string
		for _, id := range slices.Sorted(maps.Keys(v.Replicas)) {
			rs := v.Replicas[id]
			versions = append(versions, rs.Version)
			state := rs.State
			if rs.LastError != "" {
				state += ": " + rs.LastError
			}
			states = append(states, id+" "+state)
			d.PerReplica = append(d.PerReplica, replicaStats{Replica: id, State: state,
				Stable: newStatsRow("stable", "", rs.StableStats), Candidate: newStatsRow(string(rs.Mode), rs.Version, rs.Stats)})
		}
		d.Version, d.States = uniq(versions), strings.Join(states, "; ")
		d.ErrorRate, d.Verdict, d.Reason = percent(v.ErrorRate), string(v.Verdict), v.Reason
		d.Stats = []statsRow{newStatsRow("stable", "", v.StableTotal), newStatsRow(d.Mode, d.Version, v.Total)}
		shadowMode = rel.Mode == dispatch.ModeShadow
	}
	if shadowMode {
		d.Shadow = c.shadowReport(r, name)
	}
	return d
}

func (c *Console) shadowReport(r *http.Request, name string) *shadowData {
	res := c.call(r, http.MethodGet, fmt.Sprintf("/v1/plugins/%s/shadow/report?limit=%d", url.PathEscape(name), reportLimit), nil)
	if !res.OK() {
		return &shadowData{Err: res.Err()}
	}
	var rep struct {
		Summary shadow.Summary  `json:"summary"`
		Records []shadow.Record `json:"records"`
	}
	if err := json.Unmarshal(res.Body, &rep); err != nil {
		return &shadowData{Err: "decoding the shadow report: " + err.Error()}
	}
	out := &shadowData{Summary: rep.Summary}
	for _, rec := range rep.Records {
		out.Records = append(out.Records, shadowRow{Record: rec, StableActions: actionTexts(rec.Stable.Actions),
			CandidateActions: actionTexts(rec.Candidate.Actions)})
	}
	return out
}

// releaseTag marks a plugin with a running release on the overview, e.g.
// "canary 10 % of chats"; "" without one.
func releaseTag(v pluginView) string {
	if d := v.Desired; d != nil && d.Release != nil {
		return string(d.Release.Mode) + " " + splitText(d.Release.Split)
	}
	// A replica's own report, when the desired state is not (yet) known.
	for _, s := range v.Replicas {
		if s.Release != nil {
			return string(s.Release.Mode) + " " + splitText(s.Release.Split)
		}
	}
	return ""
}
