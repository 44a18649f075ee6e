package main

import (
	"context"
	"io"

	"github.com/larkway/larkway/core/larkemu"
)

func emulatorCmd(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlags("emulator", stderr)
	listen := fs.String("listen", "127.0.0.1:8091", "address to serve the emulated Lark OpenAPI on")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := parse(fs, args); err != nil {
		return err
	}
	logger := newLogger(stderr, *level)
	logger.Info("Lark emulator listening", "addr", *listen, "messages", "http://"+*listen+"/_emu/messages")
	return larkemu.New(larkemu.Options{Logger: logger}).Run(ctx, *listen)
}
