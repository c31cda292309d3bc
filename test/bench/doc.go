// Package bench is Arbiter's benchmark harness: a load generator for the gRPC API (closed and
// open loop, with latency percentiles from a log-linear histogram), the baselines it is
// measured against (a no-op server of the same gRPC API, and `opa run --server` asked the same
// decision over REST), and the scenarios of the benchmark issue: throughput against both
// baselines, session scale, policy swaps under load, FilterTools against Decide, and the
// engine against raw OPA in process.
//
// Every server runs in its own process: Arbiter as the `arbiter serve` binary built from this
// module (or, for the scale scenario and profiles, the engine and gRPC service composed in a
// child process of the harness), the no-op server in a child process, OPA as its own binary,
// built once by the harness from the module version go.mod pins. Run it with
//
//	go run ./test/bench/cmd/arbiter-bench -out report.md
//
// and see BENCHMARKS.md for the figures and what they mean.
package bench
