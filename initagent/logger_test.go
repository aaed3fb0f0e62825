package initagent

import (
	"io"
	"log/slog"

	"github.com/go-logr/logr"
)

func testLogger(w io.Writer) logr.Logger { return logr.FromSlogHandler(slog.NewJSONHandler(w, nil)) }
