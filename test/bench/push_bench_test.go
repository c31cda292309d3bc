package bench

import (
	"context"
	"testing"

	"github.com/arbiter-mcp/arbiter/bundles"
	"github.com/arbiter-mcp/arbiter/engine"
)

// BenchmarkPush is one push of the swap scenario's bundles through the bundle manager, in
// process: read, compile, prepare, plan, probe and swap, alternating two revisions that
// differ in a rule and in data, so every push compiles.
func BenchmarkPush(b *testing.B) {
	ctx := context.Background()
	p, err := Policy(0)
	if err != nil {
		b.Fatal(err)
	}
	eng, err := engine.New(ctx, engine.Config{}, p)
	if err != nil {
		b.Fatal(err)
	}
	mgr := bundles.NewManager(bundles.Config{Fallback: bundles.Policy(p)}, engineActivator{eng})
	// The swap scenario's first two bundles, built as it builds them (the pusher is not
	// used to push: the manager is called directly).
	pusher, err := NewBundlePusher("127.0.0.1:0", "bench", 2)
	if err != nil {
		b.Fatal(err)
	}
	raw := pusher.bundles
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if _, err := mgr.Push(ctx, "bench", raw[i%2], "bench"); err != nil {
			b.Fatal(err)
		}
	}
}
