// Command hostile is a misbehaving plugin for the plugin host's tests. Its
// behaviour comes from HOSTILE_MODE:
//
//	hang-describe   never answers Describe
//	bad-manifest    describes an invalid manifest
//	flood           answers each delivery with 1000 results for unknown ids, then the real one
//	forbidden       returns a raw OpenAPI call it is not allowed to make
//	crash           exits while handling a delivery
//	crash-once      exits while handling its first delivery (HOSTILE_MARKER
//	                file records that it did), then replies "echo: TEXT"
//	garbage-stdout  prints garbage instead of the handshake
//	report-env      writes its pid and environment (JSON) to the file
//	                HOSTILE_REPORT, then serves normally
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
	"github.com/larkway/larkway/sdk/go/contract"
)

type server struct {
	pluginv1.UnimplementedPluginServiceServer
	mode string
}

func (s *server) Describe(ctx context.Context, _ *pluginv1.DescribeRequest) (*pluginv1.DescribeResponse, error) {
	switch s.mode {
	case "hang-describe":
		<-ctx.Done()
		time.Sleep(time.Hour)
	case "bad-manifest":
		return &pluginv1.DescribeResponse{Manifest: &pluginv1.Manifest{Name: "../../etc", Version: ""}}, nil
	}
	name := os.Getenv("HOSTILE_NAME")
	if name == "" {
		name = "hostile"
	}
	return &pluginv1.DescribeResponse{Manifest: &pluginv1.Manifest{Name: name, Version: "6.6.6",
		Subscriptions:  []*pluginv1.Subscription{{EventTypes: []string{"im.message.receive_v1"}}},
		AllowedActions: []pluginv1.ActionKind{pluginv1.ActionKind_ACTION_KIND_REPLY}}}, nil
}

func (s *server) Handle(stream pluginv1.PluginService_HandleServer) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil
		}
		d := req.GetDelivery()
		if d == nil {
			continue
		}
		res := &pluginv1.Result{DeliveryId: d.GetDeliveryId(), Outcome: pluginv1.Outcome_OUTCOME_DONE,
			Actions: []*pluginv1.Action{{Kind: &pluginv1.Action_Reply{Reply: &pluginv1.ReplyMessage{MsgType: "text", ContentJson: `{"text":"hostile"}`}}}}}
		switch s.mode {
		case "flood":
			for i := range 1000 {
				_ = stream.Send(&pluginv1.HandleResponse{Kind: &pluginv1.HandleResponse_Result{Result: &pluginv1.Result{
					DeliveryId: fmt.Sprintf("made-up-%d", i), Outcome: pluginv1.Outcome_OUTCOME_DONE}}})
			}
		case "forbidden":
			res.Actions = []*pluginv1.Action{{Kind: &pluginv1.Action_RawCall{RawCall: &pluginv1.RawCall{Method: "DELETE", Path: "/open-apis/im/v1/chats/oc_x"}}}}
		case "crash":
			os.Exit(3)
		case "crash-once":
			marker := os.Getenv("HOSTILE_MARKER")
			if _, err := os.Stat(marker); err != nil {
				_ = os.WriteFile(marker, []byte("crashed"), 0o600)
				os.Exit(3)
			}
			res.Actions[0].GetReply().ContentJson = `{"text":"echo: ` + d.GetEvent().GetMessage().GetText() + `"}`
		}
		if err := stream.Send(&pluginv1.HandleResponse{Kind: &pluginv1.HandleResponse_Result{Result: res}}); err != nil {
			return nil
		}
	}
}

type grpcPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	mode string
}

func (g *grpcPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pluginv1.RegisterPluginServiceServer(s, &server{mode: g.mode})
	return nil
}

func (g *grpcPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, nil
}

func main() {
	mode := os.Getenv("HOSTILE_MODE")
	if mode == "report-env" {
		b, _ := json.Marshal(map[string]any{"pid": os.Getpid(), "environ": os.Environ()})
		if err := os.WriteFile(os.Getenv("HOSTILE_REPORT"), b, 0o600); err != nil {
			os.Exit(4)
		}
	}
	if mode == "garbage-stdout" {
		fmt.Println("hello, I am definitely a plugin")
		time.Sleep(time.Hour)
	}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: plugin.HandshakeConfig{ProtocolVersion: contract.ProtocolVersion,
			MagicCookieKey: contract.MagicCookieKey, MagicCookieValue: contract.MagicCookieValue},
		Plugins:    plugin.PluginSet{contract.PluginName: &grpcPlugin{mode: mode}},
		GRPCServer: plugin.DefaultGRPCServer,
	})
}
