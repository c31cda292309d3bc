package grpcapi

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	arbiterv1 "github.com/arbiter-mcp/arbiter/proto/arbiter/v1"
)

// streamWorkers is the number of pooled goroutines serving calls; more calls than that run on
// goroutines of their own, as without a pool.
const streamWorkers = 64

// MaxMessageBytes is the largest request the server reads. Larger messages fail with
// ResourceExhausted before any field is looked at; the per-field limits are smaller.
const MaxMessageBytes = 4 << 20

// NewServer returns a gRPC server carrying svc behind auth, the standard health service
// (reporting hs) and server reflection, so grpcurl works against it. Interceptors in opts run
// before authentication, so they see refused calls too.
func NewServer(svc *Service, hs *health.Server, auth *Authenticator, opts ...grpc.ServerOption) *grpc.Server {
	g := grpc.NewServer(append(opts, ServerOptions(auth)...)...)
	svc.Register(g)
	healthpb.RegisterHealthServer(g, hs)
	reflection.Register(g)
	return g
}

// ServerOptions are the options NewServer serves with: the message size limit, the pooled
// stream workers and auth's interceptors. The benchmark harness's no-op server takes them too,
// so that the transport it measures is the one Arbiter serves on.
func ServerOptions(auth *Authenticator) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxMessageBytes),
		// Reuse handler goroutines: OPA's evaluation grows a goroutine's stack deeply, and a
		// fresh goroutine per call pays for that growth again (+22% throughput measured by
		// the benchmark harness on 2 cores).
		grpc.NumStreamWorkers(streamWorkers),
		grpc.ChainUnaryInterceptor(auth.UnaryInterceptor),
		grpc.ChainStreamInterceptor(auth.StreamInterceptor),
	}
}

// ServiceNames are the health-checked services, besides the server as a whole ("").
var ServiceNames = []string{
	arbiterv1.DecisionService_ServiceDesc.ServiceName,
	arbiterv1.SessionService_ServiceDesc.ServiceName,
	arbiterv1.ApprovalService_ServiceDesc.ServiceName,
}
