//go:build race

package bench_test

// raceEnabled is set under the race detector, whose slower servers the smoke test allows for.
const raceEnabled = true
