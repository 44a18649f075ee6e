package dispatch

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/larkway/larkway/core/internal/action"
	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/dispatch/cardtag"
	"github.com/larkway/larkway/core/internal/envelope"
	"github.com/larkway/larkway/core/internal/shadow"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// PropShadowSource marks a message published for a shadow alone (replay):
// its value becomes the record's source.
const PropShadowSource = "larkway-shadow-source"

// shadow delivers a copy of a delivery the stable session handled (stable)
// to this shadow candidate and records both: the candidate's outcome
// settles nothing (no ack, nack or dedup claim) and its actions are checked
// against its manifest and recorded, never performed. It reports whether
// the two differ.
func (s *Session) shadow(ctx context.Context, del *bus.Delivery, stable processed) bool {
	head, err := envelope.DecodeHead(del.Payload)
	if err != nil {
		return false
	}
	source := del.Properties[PropShadowSource]
	if source == "" {
		source = "live"
	}
	rec := shadow.Record{Plugin: s.name, EventID: head.EventID, ChatID: head.ChatID, Source: source, At: time.Now(),
		Stable: side(stable.version, stable.out.String(), stable.actions)}
	var cand []*pluginv1.Action
	var refusedText []string
	candOut := "not_subscribed"
	if s.matcher.Match(&head) {
		start := time.Now()
		res, via, out := s.deliver(ctx, del)
		s.observe(out, time.Since(start))
		candOut = out.String()
		if out == OutcomeDone {
			if cr := res.GetCardResponse(); cr.GetCardJson() != "" {
				cr.CardJson = cardtag.Card(cr.GetCardJson(), s.name)
			}
			cand = cardtag.Actions(res.GetActions(), s.name)
			refused := action.CheckAllowed(s.plugin.Manifest().GetAllowedActions(), cand)
			for _, r := range refused {
				refusedText = append(refusedText, fmt.Sprintf("%d: %s", r.GetIndex(), r.GetReason()))
			}
			s.d.metrics.shadowActions.WithLabelValues(s.name, "allowed").Add(float64(len(cand) - len(refused)))
			s.d.metrics.shadowActions.WithLabelValues(s.name, "refused").Add(float64(len(refused)))
			if len(refused) > 0 {
				via.Ack(res.GetDeliveryId(), refused)
			}
		}
	}
	rec.Candidate = side(s.Version(), candOut, cand)
	rec.Candidate.Refused = refusedText
	rec.Differences = differences(stable.out.String(), candOut, stable.actions, cand)
	rec.Differs = len(rec.Differences) > 0
	if st := s.d.cfg.Shadows; st != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		if err := st.Add(rctx, rec); err != nil {
			s.logFor(del).Warn("recording shadow result", "err", err)
		}
		cancel()
	}
	return rec.Differs
}

func side(version, outcome string, actions []*pluginv1.Action) shadow.Side {
	sd := shadow.Side{Version: version, Outcome: outcome, Actions: make([]json.RawMessage, 0, len(actions))}
	for _, a := range actions {
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(a)
		if err != nil {
			b = []byte(`null`)
		}
		sd.Actions = append(sd.Actions, json.RawMessage(b))
	}
	return sd
}

// differences says how the candidate's handling differs from the stable
// one's: outcome, number of actions, and each action (compared as
// messages, so field order and encoding do not count).
func differences(stableOut, candOut string, stable, cand []*pluginv1.Action) []string {
	var d []string
	if stableOut != candOut {
		d = append(d, fmt.Sprintf("outcome: stable %s, candidate %s", stableOut, candOut))
	}
	if len(stable) != len(cand) {
		d = append(d, fmt.Sprintf("actions: stable %d, candidate %d", len(stable), len(cand)))
	}
	for i := range min(len(stable), len(cand)) {
		if !proto.Equal(stable[i], cand[i]) {
			d = append(d, fmt.Sprintf("action %d (%s) differs", i, actionKind(stable[i])))
		}
	}
	return d
}
