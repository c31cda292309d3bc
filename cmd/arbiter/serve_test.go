package main

import (
	"testing"
	"time"
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
