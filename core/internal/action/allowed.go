package action

import (
	"fmt"
	"slices"

	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// CheckAllowed is Execute's manifest check without performing anything:
// the actions a plugin with allowed_actions allowed may not take. A shadow
// candidate's actions are judged by it, so a candidate is held to the same
// manifest rules as a serving version.
func CheckAllowed(allowed []pluginv1.ActionKind, actions []*pluginv1.Action) []*pluginv1.RefusedAction {
	var refused []*pluginv1.RefusedAction
	for i, a := range actions {
		_, perm := kindOf(a)
		switch {
		case perm == pluginv1.ActionKind_ACTION_KIND_UNSPECIFIED:
			refused = append(refused, &pluginv1.RefusedAction{Index: uint32(i), Reason: "empty action"})
		case !slices.Contains(allowed, perm):
			refused = append(refused, &pluginv1.RefusedAction{Index: uint32(i),
				Reason: fmt.Sprintf("%s is not in the plugin manifest's allowed_actions", perm)})
		}
	}
	return refused
}
