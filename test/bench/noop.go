package bench

import (
	"context"
	"strconv"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/arbiter-mcp/arbiter/engine/grpcapi"
	arbiterv1 "github.com/arbiter-mcp/arbiter/proto/arbiter/v1"
)

// NoopService is the transport baseline: Arbiter's gRPC API answering allow without
// evaluating anything. Requests are still decoded and responses encoded by gRPC, so what it
// measures is the transport (and the generator) on this machine.
type NoopService struct {
	arbiterv1.UnimplementedDecisionServiceServer
	arbiterv1.UnimplementedSessionServiceServer
	n atomic.Uint64
}

var (
	_ arbiterv1.DecisionServiceServer = (*NoopService)(nil)
	_ arbiterv1.SessionServiceServer  = (*NoopService)(nil)
)

// noopRevision is the policy revision the no-op server reports.
const noopRevision = "noop"

// Decide answers allow.
func (s *NoopService) Decide(context.Context, *arbiterv1.DecideRequest) (*arbiterv1.DecideResponse, error) {
	return &arbiterv1.DecideResponse{
		Decision:       arbiterv1.Decision_DECISION_ALLOW,
		DecisionId:     "dec_noop_" + strconv.FormatUint(s.n.Add(1), 10),
		PolicyRevision: noopRevision,
	}, nil
}

// FilterTools shows every tool.
func (s *NoopService) FilterTools(_ context.Context, in *arbiterv1.FilterToolsRequest) (*arbiterv1.FilterToolsResponse, error) {
	out := &arbiterv1.FilterToolsResponse{DecisionId: "dec_noop_" + strconv.FormatUint(s.n.Add(1), 10), PolicyRevision: noopRevision}
	for _, t := range in.GetTools() {
		out.Tools = append(out.Tools, &arbiterv1.ToolVerdict{Name: t.GetName(), Decision: arbiterv1.Decision_DECISION_ALLOW})
		out.Visible = append(out.Visible, t.GetName())
	}
	return out, nil
}

// OpenSession opens a session that exists only in name.
func (s *NoopService) OpenSession(context.Context, *arbiterv1.OpenSessionRequest) (*arbiterv1.OpenSessionResponse, error) {
	n := strconv.FormatUint(s.n.Add(1), 10)
	return &arbiterv1.OpenSessionResponse{
		Decision:       arbiterv1.Decision_DECISION_ALLOW,
		DecisionId:     "dec_noop_" + n,
		PolicyRevision: noopRevision,
		Session:        &arbiterv1.Session{Id: "ses_noop_" + n, Status: arbiterv1.SessionStatus_SESSION_STATUS_ACTIVE},
	}, nil
}

// NewNoopServer returns a gRPC server carrying the no-op service with the options Arbiter's
// grpcapi.NewServer serves with (grpcapi.ServerOptions: message size limit, pooled stream
// workers, the authentication interceptors of a service without tokens), health and
// reflection, so the two differ only in what a call does. Its process tunes the collector as
// Arbiter's does (see serveChild).
func NewNoopServer() (*grpc.Server, error) {
	auth, err := grpcapi.NewAuthenticator(nil)
	if err != nil {
		return nil, err
	}
	g := grpc.NewServer(grpcapi.ServerOptions(auth)...)
	svc := &NoopService{}
	arbiterv1.RegisterDecisionServiceServer(g, svc)
	arbiterv1.RegisterSessionServiceServer(g, svc)
	healthpb.RegisterHealthServer(g, health.NewServer())
	reflection.Register(g)
	return g, nil
}
