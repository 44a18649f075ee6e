package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

func sendCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("send", stderr)
	url := fs.String("url", "http://127.0.0.1:8090/lark/events", "the core's event webhook URL")
	app := fs.String("app", "cli_demo", "app id")
	token := fs.String("token", "demo-verification-token", "the app's verification token")
	text := fs.String("text", "hello from larkway send", "message text")
	chat := fs.String("chat", "oc_demo_chat", "chat id")
	user := fs.String("user", "ou_demo_user", "sender open_id")
	if err := parse(fs, args); err != nil {
		return err
	}
	body, err := sampleMessageEvent(*app, *token, *chat, *user, *text)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, *url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: --url: %v", errUsage, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("posting event: %w", err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	fmt.Fprintf(stdout, "%s %s", resp.Status, rb)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("core answered %s", resp.Status)
	}
	return nil
}

// sampleMessageEvent builds a plain schema-2.0 im.message.receive_v1 body
// shaped like Lark's, with fresh event and message ids.
func sampleMessageEvent(app, token, chat, user, text string) ([]byte, error) {
	id := func() string {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		return hex.EncodeToString(b)
	}
	content, err := json.Marshal(map[string]string{"text": text})
	if err != nil {
		return nil, err
	}
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	ev := map[string]any{
		"schema": "2.0",
		"header": map[string]any{
			"event_id": id(), "token": token, "create_time": now,
			"event_type": "im.message.receive_v1", "tenant_key": "demo-tenant", "app_id": app,
		},
		"event": map[string]any{
			"sender": map[string]any{
				"sender_id":   map[string]string{"open_id": user, "user_id": "u_demo", "union_id": "on_demo"},
				"sender_type": "user", "tenant_key": "demo-tenant",
			},
			"message": map[string]any{
				"message_id": "om_" + id(), "create_time": now, "update_time": now,
				"chat_id": chat, "chat_type": "group", "message_type": "text", "content": string(content),
			},
		},
	}
	return json.Marshal(ev)
}
