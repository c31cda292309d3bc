// Package grpcapi is the thin gRPC layer over the engine: it checks sizes, maps proto messages
// to engine types and back, and maps errors to status codes. It holds no decision logic.
package grpcapi

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/arbiter-mcp/arbiter/engine"
	"github.com/arbiter-mcp/arbiter/engine/state"
	arbiterv1 "github.com/arbiter-mcp/arbiter/proto/arbiter/v1"
)

// Decider is what the service needs from the engine.
type Decider interface {
	Decide(ctx context.Context, req *engine.Request) (engine.Decision, error)
	FilterTools(ctx context.Context, req *engine.Request, tools []engine.Tool) (engine.Filtered, error)
	OpenSession(ctx context.Context, req *engine.OpenRequest) (engine.Decision, *engine.SessionInfo, error)
	GetSession(id string) (*engine.SessionInfo, error)
	ListSessions(f state.ListFilter) ([]*engine.SessionInfo, bool, error)
	CloseSession(ctx context.Context, id, reason, actor string) (*engine.SessionInfo, error)
	RevokeSessions(ctx context.Context, f state.RevokeFilter, reason, actor string) ([]string, error)
	RenewSession(ctx context.Context, req *engine.RenewRequest) (engine.Decision, *engine.SessionInfo, error)
	GetApproval(id string) (*engine.ApprovalInfo, error)
	ListApprovals(f state.ApprovalFilter) ([]*engine.ApprovalInfo, bool, error)
	ResolveApproval(id string, r state.Resolution) (*engine.ApprovalInfo, error)
	WatchApproval(ctx context.Context, id string, send func(*engine.ApprovalInfo) error) error
}

// Config tunes the service. Zero values take the defaults noted on each field.
type Config struct {
	// MaxArgumentsBytes bounds a tool call's arguments (default 256 KiB).
	MaxArgumentsBytes int
	// MaxContextBytes bounds the free-form context and subject attributes (default 64 KiB).
	MaxContextBytes int
	// Logger receives internal errors (default: discard).
	Logger *slog.Logger
}

// Service implements the DecisionService, SessionService and ApprovalService gRPC APIs.
type Service struct {
	arbiterv1.UnimplementedDecisionServiceServer
	arbiterv1.UnimplementedSessionServiceServer
	arbiterv1.UnimplementedApprovalServiceServer

	engine Decider
	limits limits
	log    *slog.Logger
}

var (
	_ arbiterv1.DecisionServiceServer = (*Service)(nil)
	_ arbiterv1.SessionServiceServer  = (*Service)(nil)
)

// New returns a service over e.
func New(e Decider, cfg Config) *Service {
	if cfg.MaxArgumentsBytes <= 0 {
		cfg.MaxArgumentsBytes = 256 << 10
	}
	if cfg.MaxContextBytes <= 0 {
		cfg.MaxContextBytes = 64 << 10
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{engine: e, limits: limits{argumentsBytes: cfg.MaxArgumentsBytes, contextBytes: cfg.MaxContextBytes}, log: cfg.Logger}
}

// Register registers the service's APIs on s.
func (s *Service) Register(g grpc.ServiceRegistrar) {
	arbiterv1.RegisterDecisionServiceServer(g, s)
	arbiterv1.RegisterSessionServiceServer(g, s)
	arbiterv1.RegisterApprovalServiceServer(g, s)
}

// Decide implements DecisionService.Decide.
func (s *Service) Decide(ctx context.Context, in *arbiterv1.DecideRequest) (*arbiterv1.DecideResponse, error) {
	req, err := s.request(in.GetSessionId(), in.GetClient(), in.GetSubject(), in.GetServer(), in.GetCredential(), in.GetContext())
	if err != nil {
		return nil, err
	}
	op := in.GetOperation()
	args, err := s.limits.argumentsFrom(op)
	if err != nil {
		return nil, err
	}
	req.Operation = engine.Operation{
		Method:         op.GetMethod(),
		Tool:           op.GetTool(),
		Arguments:      args,
		Annotations:    annotationsFrom(op.GetAnnotations()),
		DefinitionHash: op.GetDefinitionHash(),
		ResourceURI:    op.GetResourceUri(),
		PromptName:     op.GetPromptName(),
	}
	req.Gateway = PrincipalFrom(ctx).Name
	d, err := s.engine.Decide(ctx, &req)
	if err != nil {
		return nil, s.errorTo(ctx, "decide", err)
	}
	obligations, err := obligationsTo(d.Obligations)
	if err != nil {
		return nil, s.errorTo(ctx, "decide", err)
	}
	return &arbiterv1.DecideResponse{
		Decision:       outcomeTo(d.Outcome),
		Reasons:        reasonsTo(d.Reasons),
		DecisionId:     d.ID,
		PolicyRevision: d.PolicyRevision,
		Approval:       handleTo(d),
		Obligations:    obligations,
	}, nil
}

// FilterTools implements DecisionService.FilterTools.
func (s *Service) FilterTools(ctx context.Context, in *arbiterv1.FilterToolsRequest) (*arbiterv1.FilterToolsResponse, error) {
	req, err := s.request(in.GetSessionId(), in.GetClient(), in.GetSubject(), in.GetServer(), in.GetCredential(), in.GetContext())
	if err != nil {
		return nil, err
	}
	tools := make([]engine.Tool, len(in.GetTools()))
	for i, t := range in.GetTools() {
		tools[i] = engine.Tool{Name: t.GetName(), Annotations: annotationsFrom(t.GetAnnotations()), DefinitionHash: t.GetDefinitionHash()}
	}
	f, err := s.engine.FilterTools(ctx, &req, tools)
	if err != nil {
		return nil, s.errorTo(ctx, "filter tools", err)
	}
	out := &arbiterv1.FilterToolsResponse{DecisionId: f.ID, PolicyRevision: f.PolicyRevision, Tools: make([]*arbiterv1.ToolVerdict, len(f.Tools))}
	for i, v := range f.Tools {
		out.Tools[i] = &arbiterv1.ToolVerdict{Name: v.Name, Decision: outcomeTo(v.Outcome), Reasons: reasonsTo(v.Reasons)}
		if v.Outcome != engine.Deny {
			out.Visible = append(out.Visible, v.Name)
		}
	}
	return out, nil
}

// OpenSession implements SessionService.OpenSession.
func (s *Service) OpenSession(ctx context.Context, in *arbiterv1.OpenSessionRequest) (*arbiterv1.OpenSessionResponse, error) {
	req, err := s.request("", in.GetClient(), in.GetSubject(), nil, in.GetCredential(), in.GetContext())
	if err != nil {
		return nil, err
	}
	open := &engine.OpenRequest{Client: req.Client, Subject: req.Subject, Credential: req.Credential, ContextFrom: req.ContextFrom,
		Gateway: PrincipalFrom(ctx).Name, Scopes: in.GetScopes()}
	for _, srv := range in.GetServers() {
		open.Servers = append(open.Servers, serverFrom(srv))
	}
	if open.TTL, err = ttlFrom(in.GetTtl()); err != nil {
		return nil, err
	}
	d, sess, err := s.engine.OpenSession(ctx, open)
	if err != nil {
		return nil, s.errorTo(ctx, "open session", err)
	}
	out := &arbiterv1.OpenSessionResponse{
		Decision:       outcomeTo(d.Outcome),
		Reasons:        reasonsTo(d.Reasons),
		DecisionId:     d.ID,
		PolicyRevision: d.PolicyRevision,
		Approval:       handleTo(d),
	}
	if sess != nil {
		out.Session = sessionTo(sess)
	}
	return out, nil
}

// RenewSession implements SessionService.RenewSession.
func (s *Service) RenewSession(ctx context.Context, in *arbiterv1.RenewSessionRequest) (*arbiterv1.RenewSessionResponse, error) {
	if in.GetSessionId() == "" {
		return nil, invalidArgument("session_id", "is required")
	}
	req, err := s.request(in.GetSessionId(), in.GetClient(), in.GetSubject(), nil, nil, in.GetContext())
	if err != nil {
		return nil, err
	}
	renew := &engine.RenewRequest{SessionID: req.SessionID, Client: req.Client, Subject: req.Subject, ContextFrom: req.ContextFrom, Gateway: PrincipalFrom(ctx).Name}
	if renew.TTL, err = ttlFrom(in.GetTtl()); err != nil {
		return nil, err
	}
	d, sess, err := s.engine.RenewSession(ctx, renew)
	if err != nil {
		return nil, s.errorTo(ctx, "renew session", err)
	}
	out := &arbiterv1.RenewSessionResponse{
		Decision:       outcomeTo(d.Outcome),
		Reasons:        reasonsTo(d.Reasons),
		DecisionId:     d.ID,
		PolicyRevision: d.PolicyRevision,
		Approval:       handleTo(d),
	}
	if sess != nil {
		out.Session = sessionTo(sess)
	}
	return out, nil
}

func ttlFrom(d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, invalidArgument("ttl", err.Error())
	}
	return d.AsDuration(), nil
}

// handleTo is the approval a decision waits on or was decided by, if any.
func handleTo(d engine.Decision) *arbiterv1.ApprovalHandle {
	if d.ApprovalID == "" {
		return nil
	}
	return &arbiterv1.ApprovalHandle{Id: d.ApprovalID, ExpiresAt: timeTo(d.ApprovalExpiresAt)}
}

// pageSize applies the default and the cap to a requested page size.
func pageSize(n uint32) (int, error) {
	switch {
	case n == 0:
		return 100, nil
	case n > maxPageSize:
		return 0, invalidArgument("page_size", "must be at most 1000")
	}
	return int(n), nil
}

// GetSession implements SessionService.GetSession.
func (s *Service) GetSession(ctx context.Context, in *arbiterv1.GetSessionRequest) (*arbiterv1.GetSessionResponse, error) {
	if in.GetSessionId() == "" {
		return nil, invalidArgument("session_id", "is required")
	}
	sess, err := s.engine.GetSession(in.GetSessionId())
	if err != nil {
		return nil, s.errorTo(ctx, "get session", err)
	}
	return &arbiterv1.GetSessionResponse{Session: sessionTo(sess)}, nil
}

// maxPageSize caps ListSessions pages.
const maxPageSize = 1000

// ListSessions implements SessionService.ListSessions.
func (s *Service) ListSessions(ctx context.Context, in *arbiterv1.ListSessionsRequest) (*arbiterv1.ListSessionsResponse, error) {
	size, err := pageSize(in.GetPageSize())
	if err != nil {
		return nil, err
	}
	sessions, more, err := s.engine.ListSessions(state.ListFilter{
		ClientID:  in.GetClientId(),
		SubjectID: in.GetSubjectId(),
		Status:    statusFrom(in.GetStatus()),
		After:     in.GetPageToken(),
		Limit:     size,
	})
	if err != nil {
		return nil, s.errorTo(ctx, "list sessions", err)
	}
	out := &arbiterv1.ListSessionsResponse{Sessions: make([]*arbiterv1.Session, len(sessions))}
	for i, sess := range sessions {
		out.Sessions[i] = sessionTo(sess)
	}
	if more && len(sessions) > 0 {
		out.NextPageToken = sessions[len(sessions)-1].Session.ID
	}
	return out, nil
}

// CloseSession implements SessionService.CloseSession.
func (s *Service) CloseSession(ctx context.Context, in *arbiterv1.CloseSessionRequest) (*arbiterv1.CloseSessionResponse, error) {
	if in.GetSessionId() == "" {
		return nil, invalidArgument("session_id", "is required")
	}
	sess, err := s.engine.CloseSession(ctx, in.GetSessionId(), in.GetReason(), PrincipalFrom(ctx).Name)
	if err != nil {
		return nil, s.errorTo(ctx, "close session", err)
	}
	return &arbiterv1.CloseSessionResponse{Session: sessionTo(sess)}, nil
}

// RevokeSessions implements SessionService.RevokeSessions.
func (s *Service) RevokeSessions(ctx context.Context, in *arbiterv1.RevokeSessionsRequest) (*arbiterv1.RevokeSessionsResponse, error) {
	ids, err := s.engine.RevokeSessions(ctx, state.RevokeFilter{
		SessionID: in.GetSessionId(),
		ClientID:  in.GetClientId(),
		SubjectID: in.GetSubjectId(),
		ServerID:  in.GetServerId(),
	}, in.GetReason(), PrincipalFrom(ctx).Name)
	if err != nil {
		return nil, s.errorTo(ctx, "revoke sessions", err)
	}
	return &arbiterv1.RevokeSessionsResponse{SessionIds: ids}, nil
}

// request converts the parts every decision request shares.
func (s *Service) request(sessionID string, c *arbiterv1.Client, subj *arbiterv1.Subject, srv *arbiterv1.Server, cred *arbiterv1.Credential, ctxStruct *structpb.Struct) (engine.Request, error) {
	subject, err := s.limits.subjectFrom(subj)
	if err != nil {
		return engine.Request{}, err
	}
	reqCtx, err := s.limits.lazyStruct("context", ctxStruct, s.limits.contextBytes)
	if err != nil {
		return engine.Request{}, err
	}
	return engine.Request{
		SessionID:   sessionID,
		Client:      clientFrom(c),
		Subject:     subject,
		Server:      serverFrom(srv),
		Credential:  credentialFrom(cred),
		ContextFrom: reqCtx,
	}, nil
}

func invalidArgument(field, reason string) error {
	return status.Error(codes.InvalidArgument, field+": "+reason)
}

// errorTo maps an engine error to a status. Internal details are logged, not returned.
func (s *Service) errorTo(ctx context.Context, op string, err error) error {
	var inv *engine.InvalidArgumentError
	switch {
	case errors.As(err, &inv):
		return invalidArgument(inv.Field, inv.Reason)
	case errors.Is(err, engine.ErrSessionNotFound):
		return status.Error(codes.NotFound, "session not found")
	case errors.Is(err, engine.ErrSessionEnded):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, engine.ErrDecisionLogUnavailable):
		return status.Error(codes.Unavailable, "the decision log cannot record this action; nothing was changed")
	case errors.Is(err, engine.ErrApprovalNotFound):
		return status.Error(codes.NotFound, "approval not found")
	case errors.Is(err, engine.ErrApprovalResolved), errors.Is(err, engine.ErrApprovalExpired):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "request canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	default:
		s.log.ErrorContext(ctx, op+" failed", slog.Any("error", err))
		return status.Error(codes.Internal, op+" failed")
	}
}
