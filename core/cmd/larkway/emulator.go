package main

import (
	"io"

	"github.com/spf13/cobra"

	"github.com/larkway/larkway/core/larkemu"
)

func newEmulatorCmd(stderr io.Writer) *cobra.Command {
	var listen, level string
	c := &cobra.Command{
		Use:   "emulator",
		Short: "Run the Lark OpenAPI emulator",
		Long: `Serves an emulated Lark OpenAPI for development: point an app's base_url at it
and read the bot's messages at http://ADDR/_emu/messages.`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			logger := newLogger(stderr, level)
			logger.Info("Lark emulator listening", "addr", listen, "messages", "http://"+listen+"/_emu/messages")
			return larkemu.New(larkemu.Options{Logger: logger}).Run(c.Context(), listen)
		},
	}
	c.Flags().StringVar(&listen, "listen", "127.0.0.1:8091", "`ADDR` to serve the emulated Lark OpenAPI on")
	c.Flags().StringVar(&level, "log-level", "info", "debug, info, warn or error")
	return c
}
