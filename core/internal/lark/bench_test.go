package lark

import (
	"fmt"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/larkway/larkway/core/larkemu"
)

// BenchmarkClientSend measures one Send through the SDK against the
// emulator over loopback HTTP, with the token cached.
func BenchmarkClientSend(b *testing.B) {
	emu := larkemu.New(larkemu.Options{Apps: map[string]string{testAppID: testSecret}, Unlimited: true})
	srv := httptest.NewServer(emu.Handler())
	defer srv.Close()
	c, err := New(Config{AppID: testAppID, AppSecret: testSecret, BaseURL: srv.URL, Timeout: 5 * time.Second}, Deps{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close(b.Context())
	var n atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			if i%10000 == 0 {
				emu.Reset() // bound the emulator's record
			}
			_, err := c.Send(b.Context(), SendRequest{ReceiveIDType: ReceiveIDChatID, ReceiveID: "oc_bench", MsgType: "text",
				Content: `{"text":"benchmark"}`, UUID: fmt.Sprint("b-", i)})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
}
