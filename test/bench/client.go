package bench

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	arbiterv1 "github.com/arbiter-mcp/arbiter/proto/arbiter/v1"
)

// GRPCClient calls one server's gRPC API over a few connections, as a gateway with a small
// connection pool does. Worker i uses connection i mod n.
type GRPCClient struct {
	conns     []*grpc.ClientConn
	decisions []arbiterv1.DecisionServiceClient
	sessions  arbiterv1.SessionServiceClient
}

// DialGRPC connects n times to addr.
func DialGRPC(addr string, n int) (*GRPCClient, error) {
	c := &GRPCClient{}
	for range max(n, 1) {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			c.Close()
			return nil, err
		}
		c.conns = append(c.conns, conn)
		c.decisions = append(c.decisions, arbiterv1.NewDecisionServiceClient(conn))
	}
	c.sessions = arbiterv1.NewSessionServiceClient(c.conns[0])
	return c, nil
}

// Close closes every connection.
func (c *GRPCClient) Close() {
	for _, conn := range c.conns {
		conn.Close()
	}
}

// LoadSessions are the sessions a load runs in, with their requests built once: the
// generator sends prepared messages, so it measures the server rather than itself.
type LoadSessions struct {
	IDs []string
	// decide[s][k] is template k of Mix in session s; filter[s] lists the toolbox's tools.
	decide [][]*arbiterv1.DecideRequest
	filter []*arbiterv1.FilterToolsRequest
	// picks maps a number in [0, 100) to a template by weight.
	picks [100]int
}

// OpenLoadSessions opens n sessions through the API (OpenSession must allow each), and
// makes warmCalls allowed calls in each so that their history is full, as mid-task.
// FilterTools requests list filterN tools.
func (c *GRPCClient) OpenLoadSessions(ctx context.Context, n, filterN int) (*LoadSessions, error) {
	expires := time.Now().Add(2 * time.Hour)
	ls := &LoadSessions{}
	for i := range ls.picks {
		ls.picks[i] = pick(i)
	}
	for i := range n {
		resp, err := c.sessions.OpenSession(ctx, OpenSessionRequest(i, expires))
		if err != nil {
			return nil, fmt.Errorf("open session %d: %w", i, err)
		}
		if resp.GetDecision() != arbiterv1.Decision_DECISION_ALLOW || resp.GetSession().GetId() == "" {
			return nil, fmt.Errorf("open session %d: %s %v", i, resp.GetDecision(), resp.GetReasons())
		}
		id := resp.GetSession().GetId()
		ls.IDs = append(ls.IDs, id)
		reqs := make([]*arbiterv1.DecideRequest, len(Mix))
		for k := range Mix {
			reqs[k] = Mix[k].DecideRequest(id, i, expires)
		}
		ls.decide = append(ls.decide, reqs)
		ls.filter = append(ls.filter, FilterToolsRequest(id, i, filterN, expires))
	}
	// Warm up: fill every session's history with allowed calls, several sessions at a time.
	allowed := warmTemplates
	errc := make(chan error, n)
	sem := make(chan struct{}, 16)
	for s := range n {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			for j := range warmCalls {
				if _, err := c.decisions[s%len(c.decisions)].Decide(ctx, ls.decide[s][allowed[j%len(allowed)]]); err != nil {
					errc <- fmt.Errorf("warm session %d: %w", s, err)
					return
				}
			}
			errc <- nil
		}()
	}
	for range n {
		if err := <-errc; err != nil {
			return nil, err
		}
	}
	return ls, nil
}

// DecideCall sends Decide requests of the mix, each to a random load session. Unless want is
// nil, an outcome other than want[k] for template k is a failed decision.
func (c *GRPCClient) DecideCall(ls *LoadSessions, want []Outcome) CallFunc {
	return func(ctx context.Context, w *Worker) (Answer, error) {
		k := ls.picks[w.Rand.IntN(100)]
		req := ls.decide[w.Rand.IntN(len(ls.decide))][k]
		resp, err := c.decisions[w.ID%len(c.decisions)].Decide(ctx, req)
		if err != nil {
			return Answer{}, err
		}
		a := Answer{Outcome: outcomeOf(resp.GetDecision()), Revision: resp.GetPolicyRevision()}
		if a.Unexpected = want != nil && a.Outcome != want[k]; a.Unexpected {
			a.Detail = Mix[k].Name + ": " + a.Outcome.String() + reasonCodes(resp.GetReasons())
		}
		return a, nil
	}
}

// FilterCall sends FilterTools requests listing the toolbox's tools. Unless wantVisible is
// negative, an answer showing another number of tools is a failed decision.
func (c *GRPCClient) FilterCall(ls *LoadSessions, wantVisible int) CallFunc {
	return func(ctx context.Context, w *Worker) (Answer, error) {
		req := ls.filter[w.Rand.IntN(len(ls.filter))]
		resp, err := c.decisions[w.ID%len(c.decisions)].FilterTools(ctx, req)
		if err != nil {
			return Answer{}, err
		}
		if len(resp.GetTools()) != len(req.GetTools()) {
			return Answer{}, fmt.Errorf("FilterTools answered %d verdicts for %d tools", len(resp.GetTools()), len(req.GetTools()))
		}
		a := Answer{Outcome: OutcomeAllow, Revision: resp.GetPolicyRevision()}
		if a.Unexpected = wantVisible >= 0 && len(resp.GetVisible()) != wantVisible; a.Unexpected {
			// Which reasons hid tools the policy shows: collect the codes of denied verdicts.
			codes := map[string]bool{}
			for _, v := range resp.GetTools() {
				if v.GetDecision() == arbiterv1.Decision_DECISION_DENY {
					for _, r := range v.GetReasons() {
						codes[r.GetCode()] = true
					}
				}
			}
			a.Detail = fmt.Sprintf("%d of %d tools visible, want %d; hidden by %v", len(resp.GetVisible()), len(resp.GetTools()), wantVisible, sortedKeys(codes))
		}
		return a, nil
	}
}

func reasonCodes(rs []*arbiterv1.Reason) string {
	if len(rs) == 0 {
		return ""
	}
	codes := make([]string, len(rs))
	for i, r := range rs {
		codes[i] = r.GetCode()
	}
	return " (" + strings.Join(codes, ", ") + ")"
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func outcomeOf(d arbiterv1.Decision) Outcome {
	switch d {
	case arbiterv1.Decision_DECISION_ALLOW:
		return OutcomeAllow
	case arbiterv1.Decision_DECISION_DENY:
		return OutcomeDeny
	case arbiterv1.Decision_DECISION_REQUIRE_APPROVAL:
		return OutcomeApproval
	}
	return OutcomeOther
}
