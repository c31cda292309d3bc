// Package gctune sets the garbage collector's target from the live heap: a high percent while
// the heap is small, 100 once it is large. arbiter serve runs it; so does the benchmark
// harness's library server, so both collect the same way.
package gctune

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Headroom is the heap growth allowed between two collections, as long as --gogc permits
// it. Decisions allocate quickly (~12 KB each in the engine, more with gRPC's) on a small
// live heap: a high GC percent there saves a lot of collector work for a little memory. With
// a million sessions the live heap is near a gigabyte, and the same percent would let it grow
// by gigabytes in fresh pages, each faulted in and zeroed; there the standard 100% is both
// smaller and faster.
const Headroom = 256 << 20

// DefaultLimit is the highest GC percent arbiter serve uses unless told otherwise (--gogc):
// on 2 CPUs, 400 measured +44% decisions per second over Go's default 100 on a small heap.
// 1600 gave ~8% more throughput again, but doubled the p99 of an open-loop load at half the
// server's capacity (60-81 ms against 29-35 ms, BENCHMARKS.md), so it is not the default.
const DefaultLimit = 400

// PercentFor is the GC percent for a live heap of live bytes: enough for Headroom bytes
// of growth, at least 100 and at most limit.
func PercentFor(live uint64, limit int) int {
	if limit <= 100 || live == 0 {
		return limit
	}
	p := min(100*Headroom/live, uint64(limit))
	return int(max(p, 100))
}

// Run sets the GC percent from the live heap now and every interval until ctx ends. It
// changes it only when the target moves by more than a tenth, so a steady heap is left alone.
func Run(ctx context.Context, limit int, interval time.Duration) {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	current := -1
	apply := func() {
		metrics.Read(sample)
		if sample[0].Value.Kind() != metrics.KindUint64 {
			return
		}
		p := PercentFor(sample[0].Value.Uint64(), limit)
		if current < 0 || p*10 < current*9 || p*10 > current*11 {
			debug.SetGCPercent(p)
			current = p
		}
	}
	apply()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			apply()
		}
	}
}
