package bench

import (
	"bytes"
	"context"
	"fmt"
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
	var raw [2][]byte
	for i := range raw {
		dir := b.TempDir()
		if _, err := WritePolicyDir(dir, i+1); err != nil {
			b.Fatal(err)
		}
		var buf bytes.Buffer
		if err := bundles.Build(dir, bundles.BuildOptions{Revision: fmt.Sprintf("r%d", i+1)}, &buf); err != nil {
			b.Fatal(err)
		}
		raw[i] = buf.Bytes()
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if _, err := mgr.Push(ctx, "bench", raw[i%2], "bench"); err != nil {
			b.Fatal(err)
		}
	}
}
