package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/larkway/larkway/core/internal/action"
	"github.com/larkway/larkway/core/internal/testenv"
	"github.com/larkway/larkway/core/larkemu"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// TestActionsCommands: failed actions in a core's shared Redis store are
// listed, shown, replayed (once Lark answers) and purged by `larkway
// actions`, with the admin API's errors.
func TestActionsCommands(t *testing.T) {
	emu := larkemu.New(larkemu.Options{Apps: map[string]string{"cli_admin": "s"}, Unlimited: true})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { defer close(served); _ = emu.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-served })
	emu.SetFaults(larkemu.Faults{ErrorRate: 1, ErrorStatus: 502})

	prefix := testenv.Name(t, "lw") + ":"
	url, _ := startCoreWith(t, "http://"+ln.Addr().String(), fmt.Sprintf("redis: {addr: %q, key_prefix: %q}", testenv.RedisAddr(t), prefix))
	rdb := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	t.Cleanup(func() { _ = rdb.Close() })
	store := action.NewRedisFailedStore(rdb, prefix+"action:"+action.FailedKey, 0)
	// other's is a reaction: its failing replay opens the reactions'
	// breaker, not the sends'.
	actions := map[string]*pluginv1.Action{
		"echo":  {Kind: &pluginv1.Action_Send{Send: &pluginv1.SendMessage{ReceiveIdType: "chat_id", ReceiveId: "oc_cli", MsgType: "text", ContentJson: `{"text":"lost 0"}`}}},
		"other": {Kind: &pluginv1.Action_AddReaction{AddReaction: &pluginv1.AddReaction{MessageId: "om_cli", EmojiType: "SMILE"}}},
	}
	for i, p := range []string{"echo", "other"} {
		a, _ := protojson.Marshal(actions[p])
		kind := map[string]string{"echo": "send", "other": "add_reaction"}[p]
		if err := store.Put(t.Context(), action.FailedAction{Plugin: p, AppID: "cli_admin", EventID: fmt.Sprint("ev_cli", i), DedupKey: fmt.Sprint("dk", i),
			ChatID: "oc_cli", Kind: kind, Action: a, Error: "HTTP 502", Attempts: 3, At: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	list, _ := store.List(t.Context(), 0)
	other, echo := list[0].ID, list[1].ID
	auth := []string{"--admin", url, "--token", adminToken}
	with := func(args ...string) []string { return append(args, auth...) }

	code, out, errOut := runCLI(t, with("actions", "list")...)
	if code != 0 || !strings.Contains(out, "2 failed action(s) in total") || !strings.Contains(out, echo) || strings.Index(out, other) > strings.Index(out, echo) {
		t.Fatalf("list (newest first): %d\n%s\n%s", code, out, errOut)
	}
	code, out, _ = runCLI(t, with("actions", "list", "--plugin", "echo", "--json")...)
	var listed struct {
		FailedActions []action.FailedAction `json:"failed_actions"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &listed) != nil || len(listed.FailedActions) != 1 || listed.FailedActions[0].ID != echo {
		t.Fatalf("list --plugin echo: %d %s", code, out)
	}
	code, out, _ = runCLI(t, with("actions", "show", echo)...)
	if code != 0 || !strings.Contains(out, "lost 0") || !strings.Contains(out, `"plugin": "echo"`) {
		t.Fatalf("show: %d %s", code, out)
	}
	// Lark still failing: the replay fails and the entry stays.
	code, _, errOut = runCLI(t, with("actions", "replay", other)...)
	if code != 1 || !strings.Contains(errOut, "replay_failed") {
		t.Fatalf("replay while Lark fails: %d %s", code, errOut)
	}
	emu.SetFaults(larkemu.Faults{})
	code, out, errOut = runCLI(t, with("actions", "replay", "--all", "--plugin", "echo")...)
	if code != 0 || !strings.Contains(out, `"replayed": 1`) {
		t.Fatalf("replay: %d %s %s", code, out, errOut)
	}
	if msgs := emu.Messages(); len(msgs) != 1 || !strings.Contains(msgs[0].Content, "lost 0") {
		t.Fatalf("messages after the replay: %+v", msgs)
	}
	code, out, errOut = runCLI(t, with("actions", "purge", other)...)
	if code != 0 || !strings.Contains(out, `"purged": 1`) {
		t.Fatalf("purge: %d %s %s", code, out, errOut)
	}
	if n, _ := store.Count(t.Context()); n != 0 {
		t.Fatalf("%d failed actions left", n)
	}

	tests := []struct {
		name string
		args []string
		code int
		err  string
	}{
		{"show unknown", with("actions", "show", "nope"), 1, "not_found"},
		{"replay unknown", with("actions", "replay", "nope"), 1, "not_found"},
		{"show without id", with("actions", "show"), 2, "missing argument ID"},
		{"list with an argument", with("actions", "list", "echo"), 2, `unexpected argument "echo"`},
		{"replay ids and all", with("actions", "replay", "abc", "--all"), 2, "ids or --all"},
		{"replay nothing", with("actions", "replay"), 2, "ids or --all"},
		{"purge plugin without all", with("actions", "purge", "abc", "--plugin", "echo"), 2, "--plugin goes with --all"},
		{"unknown sub", with("actions", "eat"), 2, `unknown command "eat" for "larkway actions"`},
		{"wrong token", []string{"actions", "list", "--admin", url, "--token", "wrong"}, 1, "unauthorized"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, tt.args...)
			if code != tt.code || !strings.Contains(errOut+out, tt.err) {
				t.Fatalf("code %d (want %d)\nstdout %s\nstderr %s", code, tt.code, out, errOut)
			}
		})
	}
}
