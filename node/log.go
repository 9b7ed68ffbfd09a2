package node

import (
	"bytes"
	"io"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// logWriter turns a library's log lines into slog records; "[DEBUG]" lines
// stay at debug level, "[WARN]"/"[ERR" ones at warn/error.
type logWriter struct{ log *slog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(bytes.TrimRight(p, "\n")))
	switch {
	case strings.Contains(line, "[DEBUG]"), strings.Contains(line, "[TRACE]"):
		w.log.Debug(line)
	case strings.Contains(line, "[WARN]"):
		w.log.Warn(line)
	case strings.Contains(line, "[ERR"):
		w.log.Error(line)
	default:
		w.log.Info(line)
	}
	return len(p), nil
}

// hclogFor adapts slog for hashicorp/raft.
func hclogFor(log *slog.Logger, name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Info, Output: io.Writer(logWriter{log.With("component", name)})})
}
