package main

import (
	"context"

	"github.com/kvinject/kvinject/internal/azemu"
)

func runEmulator(ctx context.Context, args []string, io stdio) int {
	return azemu.Main(ctx, args, io.out, io.err)
}
