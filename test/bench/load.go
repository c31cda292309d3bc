package bench

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Outcome is a decision as the generator sees it, whatever the protocol.
type Outcome int

// Outcomes; OutcomeOther is an answer that is none of the three (a no-op server's, or junk).
const (
	OutcomeOther Outcome = iota
	OutcomeAllow
	OutcomeDeny
	OutcomeApproval
	numOutcomes
)

func (o Outcome) String() string {
	switch o {
	case OutcomeAllow:
		return "allow"
	case OutcomeDeny:
		return "deny"
	case OutcomeApproval:
		return "require_approval"
	default:
		return "other"
	}
}

// Answer is what one call returned.
type Answer struct {
	Outcome Outcome
	// Unexpected is set when the outcome differs from what the workload expects for the
	// request (for example a policy_error deny where the policy allows): a failed decision.
	Unexpected bool
	// Revision is the policy revision that decided, when the protocol reports it.
	Revision string
	// Detail says what an unexpected answer was (its outcome and reason codes).
	Detail string
}

// Worker is one calling goroutine's state, handed to every call it makes.
type Worker struct {
	// ID numbers the workers from 0.
	ID int
	// Rand is the worker's own random source.
	Rand *rand.Rand
}

// NewRand returns a random source for a worker or benchmark goroutine.
func NewRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed+1, 99)) }

// CallFunc makes one request. A non-nil error is a failed request.
type CallFunc func(ctx context.Context, w *Worker) (Answer, error)

// Stats is the result of one load run.
type Stats struct {
	// Mode says how load was offered: "closed/32" (32 callers) or "open/5000/s".
	Mode     string
	Duration time.Duration
	// Offered is the open-loop rate (0 in a closed loop).
	Offered float64
	Latency Histogram
	// Errors by message; Unexpected counts answers with the wrong outcome.
	Errors     map[string]uint64
	Unexpected uint64
	// UnexpectedKinds counts unexpected answers by Answer.Detail.
	UnexpectedKinds map[string]uint64
	Outcomes        [numOutcomes]uint64
	Revisions       map[string]uint64
	// Late counts open-loop requests never sent because the generator's backlog was not
	// drained in time; they count as errors too.
	Late uint64
	// ServerCPU and LoadCPU are the CPU time the server's process and the harness (the load
	// generator) used from the end of the warm-up until the last measured request answered;
	// zero when not measured.
	ServerCPU, LoadCPU time.Duration
}

// CPUPerRequest is the server's and the load generator's CPU time per measured request.
func (s *Stats) CPUPerRequest() (server, load time.Duration) {
	n := s.Latency.Count()
	if n == 0 {
		return 0, 0
	}
	return s.ServerCPU / time.Duration(n), s.LoadCPU / time.Duration(n)
}

// OK is the number of successful requests.
func (s *Stats) OK() uint64 { return s.Latency.Count() - s.ErrorCount() }

// ErrorCount is the number of failed requests (transport or protocol errors).
func (s *Stats) ErrorCount() uint64 {
	var n uint64
	for _, c := range s.Errors {
		n += c
	}
	return n
}

// Throughput is successful requests per second.
func (s *Stats) Throughput() float64 {
	if s.Duration <= 0 {
		return 0
	}
	return float64(s.OK()) / s.Duration.Seconds()
}

// Failed is every request that did not produce the expected decision.
func (s *Stats) Failed() uint64 { return s.ErrorCount() + s.Unexpected }

// ErrorSummary lists the most frequent error messages.
func (s *Stats) ErrorSummary() string { return topKinds(s.Errors) }

// UnexpectedSummary lists the most frequent unexpected answers.
func (s *Stats) UnexpectedSummary() string { return topKinds(s.UnexpectedKinds) }

func topKinds(m map[string]uint64) string {
	type kv struct {
		k string
		v uint64
	}
	var list []kv
	for k, v := range m {
		list = append(list, kv{k, v})
	}
	sort.Slice(list, func(i, j int) bool { return list[i].v > list[j].v })
	out := ""
	for i, e := range list {
		if i == 3 {
			out += "; ..."
			break
		}
		if i > 0 {
			out += "; "
		}
		out += fmt.Sprintf("%d× %s", e.v, e.k)
	}
	return out
}

// recorder is one worker's tally.
type recorder struct {
	hist       Histogram
	errors     map[string]uint64
	unexpected uint64
	kinds      map[string]uint64
	outcomes   [numOutcomes]uint64
	revisions  map[string]uint64
}

const maxErrorKinds = 16

func (r *recorder) record(lat time.Duration, a Answer, err error) {
	r.hist.Record(lat)
	if err != nil {
		msg := err.Error()
		if len(msg) > 200 {
			msg = msg[:200]
		}
		if r.errors == nil {
			r.errors = map[string]uint64{}
		}
		if _, ok := r.errors[msg]; !ok && len(r.errors) >= maxErrorKinds {
			msg = "(other errors)"
		}
		r.errors[msg]++
		return
	}
	r.outcomes[a.Outcome]++
	if a.Unexpected {
		r.unexpected++
		if r.kinds == nil {
			r.kinds = map[string]uint64{}
		}
		d := a.Detail
		if _, ok := r.kinds[d]; !ok && len(r.kinds) >= maxErrorKinds {
			d = "(other)"
		}
		r.kinds[d]++
	}
	if a.Revision != "" {
		if r.revisions == nil {
			r.revisions = map[string]uint64{}
		}
		r.revisions[a.Revision]++
	}
}

func (s *Stats) merge(r *recorder) {
	s.Latency.Merge(&r.hist)
	for k, v := range r.errors {
		s.Errors[k] += v
	}
	s.Unexpected += r.unexpected
	for k, v := range r.kinds {
		s.UnexpectedKinds[k] += v
	}
	for i, v := range r.outcomes {
		s.Outcomes[i] += v
	}
	for k, v := range r.revisions {
		s.Revisions[k] += v
	}
}

func newStats(mode string, d time.Duration) *Stats {
	return &Stats{Mode: mode, Duration: d, Errors: map[string]uint64{}, Revisions: map[string]uint64{}, UnexpectedKinds: map[string]uint64{}}
}

// RunClosed runs a closed loop: concurrency callers, each sending its next request as soon as
// the previous one answers. Requests started during warmup are not recorded; those started
// during the following duration are. With serverPID (0: none), it also measures the CPU time
// the server's process and this one use meanwhile.
func RunClosed(ctx context.Context, call CallFunc, concurrency int, warmup, duration time.Duration, serverPID int) *Stats {
	start := time.Now()
	measureFrom := start.Add(warmup)
	end := measureFrom.Add(duration)
	var cpu0 [2]time.Duration
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		select {
		case <-time.After(time.Until(measureFrom)):
			cpu0 = cpuTimes(serverPID)
		case <-ctx.Done():
		}
	}()
	recs := make([]recorder, concurrency)
	var wg sync.WaitGroup
	for i := range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &Worker{ID: i, Rand: rand.New(rand.NewPCG(uint64(i)+1, 0x5eed))}
			rec := &recs[i]
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(end) {
					return
				}
				a, err := call(ctx, w)
				if !t0.Before(measureFrom) {
					rec.record(time.Since(t0), a, err)
				}
			}
		}()
	}
	wg.Wait()
	cpu1 := cpuTimes(serverPID)
	<-sampled
	st := newStats(fmt.Sprintf("closed/%d", concurrency), duration)
	for i := range recs {
		st.merge(&recs[i])
	}
	if serverPID > 0 && cpu0[0] > 0 && cpu1[0] > cpu0[0] {
		st.ServerCPU, st.LoadCPU = cpu1[0]-cpu0[0], cpu1[1]-cpu0[1]
	}
	return st
}

// cpuTimes reads the CPU time (user and system) used so far by process pid and by this
// process; zero for what cannot be read (pid 0, or no /proc).
func cpuTimes(pid int) [2]time.Duration {
	var out [2]time.Duration
	if pid > 0 {
		out[0] = procCPU(pid)
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		out[1] = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return out
}

// procCPU is utime + stime of /proc/PID/stat, in clock ticks of 10 ms (USER_HZ is 100 on
// Linux), or zero when it cannot be read.
func procCPU(pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name, in parentheses, may hold spaces: the fields start after its end.
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(raw[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(u+st) * 10 * time.Millisecond
}

// RunOpen runs an open loop: requests are due at a fixed rate whatever the answers, and
// each request's latency is measured from when it was due, not from when a caller got round
// to sending it, so a server that falls behind shows its queueing (no coordinated omission).
// At most maxInFlight requests are outstanding; due requests beyond that wait in line.
func RunOpen(ctx context.Context, call CallFunc, rate float64, maxInFlight int, warmup, duration time.Duration) *Stats {
	start := time.Now()
	measureFrom := start.Add(warmup)
	end := measureFrom.Add(duration)
	total := int64((warmup + duration).Seconds() * rate)
	interval := float64(time.Second) / rate

	due := make(chan time.Time, 1<<16)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	recs := make([]recorder, maxInFlight)
	var wg sync.WaitGroup
	for i := range maxInFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &Worker{ID: i, Rand: rand.New(rand.NewPCG(uint64(i)+1, 0x0be7))}
			rec := &recs[i]
			for t := range due {
				if ctx.Err() != nil {
					return
				}
				a, err := call(ctx, w)
				if !t.Before(measureFrom) {
					rec.record(time.Since(t), a, err)
				}
			}
		}()
	}

	var sent int64
	for sent < total && ctx.Err() == nil {
		now := time.Now()
		upTo := min(int64(float64(now.Sub(start))/interval)+1, total)
		for ; sent < upTo; sent++ {
			due <- start.Add(time.Duration(float64(sent) * interval))
		}
		if next := start.Add(time.Duration(float64(sent) * interval)); next.After(now) {
			time.Sleep(min(next.Sub(now), time.Millisecond))
		}
	}
	close(due)

	// The backlog gets a grace period; what is still unsent then is counted as late.
	drained := make(chan struct{})
	go func() { wg.Wait(); close(drained) }()
	grace := time.NewTimer(max(duration/2, 5*time.Second))
	defer grace.Stop()
	var late int64
	select {
	case <-drained:
	case <-grace.C:
		cancel()
		for range due {
			late++
		}
		<-drained
	}
	st := newStats(fmt.Sprintf("open/%.0f/s", rate), duration)
	st.Offered = rate
	for i := range recs {
		st.merge(&recs[i])
	}
	if late > 0 {
		st.Late = uint64(late)
		st.Errors["not sent: generator backlog not drained in time"] += uint64(late)
		for range late {
			st.Latency.Record(end.Sub(measureFrom))
		}
	}
	return st
}
