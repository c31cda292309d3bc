package main

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/arbiter-mcp/arbiter/engine"
)

// --decision-log-flush-interval 0 turns batching off; audit.Config would read 0 as its default.
func TestFlushIntervalZeroMeansNoBatching(t *testing.T) {
	if got := flushInterval(0); got != time.Nanosecond {
		t.Errorf("flushInterval(0) = %s, want 1ns: no pause between records", got)
	}
	if got := flushInterval(20 * time.Millisecond); got != 20*time.Millisecond {
		t.Errorf("flushInterval(20ms) = %s", got)
	}
}

// --evaluator takes ir (the default) or topdown, and names itself when given anything else.
func TestEvaluatorFlag(t *testing.T) {
	f, err := parseServeFlags(nil, io.Discard)
	if err != nil || f.evaluator != engine.EvaluatorIR {
		t.Fatalf("default: %q %v", f.evaluator, err)
	}
	if f, err = parseServeFlags([]string{"--evaluator", "topdown"}, io.Discard); err != nil || f.evaluator != engine.EvaluatorTopdown {
		t.Fatalf("topdown: %q %v", f.evaluator, err)
	}
	var msg strings.Builder
	if _, err = parseServeFlags([]string{"--evaluator", "wasm"}, &msg); err != errUsage || !strings.Contains(msg.String(), `--evaluator must be ir or topdown, not "wasm"`) {
		t.Fatalf("wasm: %v, %q", err, msg.String())
	}
}
