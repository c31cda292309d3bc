package grpcapi

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/arbiter-mcp/arbiter/engine"
	"github.com/arbiter-mcp/arbiter/engine/state"
	arbiterv1 "github.com/arbiter-mcp/arbiter/proto/arbiter/v1"
)

var _ arbiterv1.ApprovalServiceServer = (*Service)(nil)

// ListApprovals implements ApprovalService.ListApprovals.
func (s *Service) ListApprovals(ctx context.Context, in *arbiterv1.ListApprovalsRequest) (*arbiterv1.ListApprovalsResponse, error) {
	size, err := pageSize(in.GetPageSize())
	if err != nil {
		return nil, err
	}
	list, more, err := s.engine.ListApprovals(state.ApprovalFilter{
		Status:    approvalStatusFrom(in.GetStatus()),
		SessionID: in.GetSessionId(),
		ClientID:  in.GetClientId(),
		SubjectID: in.GetSubjectId(),
		ServerID:  in.GetServerId(),
		After:     in.GetPageToken(),
		Limit:     size,
	})
	if err != nil {
		return nil, s.errorTo(ctx, "list approvals", err)
	}
	out := &arbiterv1.ListApprovalsResponse{Approvals: make([]*arbiterv1.Approval, len(list))}
	for i, a := range list {
		out.Approvals[i] = approvalTo(a)
	}
	if more && len(list) > 0 {
		out.NextPageToken = list[len(list)-1].Approval.ID
	}
	return out, nil
}

// GetApproval implements ApprovalService.GetApproval.
func (s *Service) GetApproval(ctx context.Context, in *arbiterv1.GetApprovalRequest) (*arbiterv1.GetApprovalResponse, error) {
	if in.GetApprovalId() == "" {
		return nil, invalidArgument("approval_id", "is required")
	}
	a, err := s.engine.GetApproval(in.GetApprovalId())
	if err != nil {
		return nil, s.errorTo(ctx, "get approval", err)
	}
	if err := mayRead(ctx, a); err != nil {
		return nil, err
	}
	return &arbiterv1.GetApprovalResponse{Approval: approvalTo(a)}, nil
}

// ResolveApproval implements ApprovalService.ResolveApproval.
func (s *Service) ResolveApproval(ctx context.Context, in *arbiterv1.ResolveApprovalRequest) (*arbiterv1.ResolveApprovalResponse, error) {
	var approve bool
	switch in.GetResolution() {
	case arbiterv1.Resolution_RESOLUTION_APPROVE:
		approve = true
	case arbiterv1.Resolution_RESOLUTION_DENY:
	default:
		return nil, invalidArgument("resolution", "must be RESOLUTION_APPROVE or RESOLUTION_DENY")
	}
	a, err := s.engine.ResolveApproval(in.GetApprovalId(), state.Resolution{
		Approve: approve,
		By:      in.GetApprover(),
		Via:     PrincipalFrom(ctx).Name,
		Note:    in.GetNote(),
		Scope:   scopeFrom(in.GetScope()),
	})
	if err != nil {
		return nil, s.errorTo(ctx, "resolve approval", err)
	}
	return &arbiterv1.ResolveApprovalResponse{Approval: approvalTo(a)}, nil
}

// WatchApproval implements ApprovalService.WatchApproval.
func (s *Service) WatchApproval(in *arbiterv1.WatchApprovalRequest, stream grpc.ServerStreamingServer[arbiterv1.WatchApprovalResponse]) error {
	ctx := stream.Context()
	if in.GetApprovalId() == "" {
		return invalidArgument("approval_id", "is required")
	}
	first := true
	err := s.engine.WatchApproval(ctx, in.GetApprovalId(), func(a *engine.ApprovalInfo) error {
		if first {
			if err := mayRead(ctx, a); err != nil {
				return err
			}
			first = false
		}
		return stream.Send(&arbiterv1.WatchApprovalResponse{Approval: approvalTo(a)})
	})
	if _, ok := status.FromError(err); ok && err != nil {
		return err
	}
	if err != nil {
		return s.errorTo(ctx, "watch approval", err)
	}
	return nil
}

// mayRead lets a gateway read only the approvals its own calls asked for.
func mayRead(ctx context.Context, a *engine.ApprovalInfo) error {
	p := PrincipalFrom(ctx)
	if p.Role == RoleAdmin || a.Approval.RequestedBy == p.Name {
		return nil
	}
	return status.Errorf(codes.PermissionDenied, "approval %s was not asked for by %q", a.Approval.ID, p.Name)
}

func approvalTo(ai *engine.ApprovalInfo) *arbiterv1.Approval {
	a := ai.Approval
	out := &arbiterv1.Approval{
		Id:                 a.ID,
		Status:             approvalStatusTo(ai.Status),
		Kind:               kindTo(a.Kind),
		SessionId:          a.SessionID,
		ClientId:           a.ClientID,
		SubjectId:          a.SubjectID,
		ServerId:           a.ServerID,
		Method:             a.Method,
		Tool:               a.Tool,
		ArgumentsDigest:    a.ArgumentsDigest,
		Scope:              scopeTo(a.Scope),
		CreatedAt:          timeTo(a.CreatedAt),
		ExpiresAt:          timeTo(a.ExpiresAt),
		ResolvedAt:         timeTo(a.ResolvedAt),
		ResolvedBy:         a.ResolvedBy,
		Note:               a.Note,
		ConsumedAt:         timeTo(a.ConsumedAt),
		ConsumedByDecision: a.ConsumedBy,
		DecisionId:         a.DecisionID,
		PolicyRevision:     a.PolicyRevision,
		RequestedBy:        a.RequestedBy,
	}
	for _, r := range a.Reasons {
		out.Reasons = append(out.Reasons, &arbiterv1.Reason{Code: r.Code, Message: r.Message})
	}
	if len(a.Arguments) > 0 {
		args := &structpb.Struct{}
		if args.UnmarshalJSON(a.Arguments) == nil {
			out.Arguments = args
		}
	}
	return out
}

func approvalStatusTo(s state.ApprovalStatus) arbiterv1.ApprovalStatus {
	switch s {
	case state.ApprovalPending:
		return arbiterv1.ApprovalStatus_APPROVAL_STATUS_PENDING
	case state.ApprovalApproved:
		return arbiterv1.ApprovalStatus_APPROVAL_STATUS_APPROVED
	case state.ApprovalDenied:
		return arbiterv1.ApprovalStatus_APPROVAL_STATUS_DENIED
	case state.ApprovalExpired:
		return arbiterv1.ApprovalStatus_APPROVAL_STATUS_EXPIRED
	case state.ApprovalConsumed:
		return arbiterv1.ApprovalStatus_APPROVAL_STATUS_CONSUMED
	default:
		return arbiterv1.ApprovalStatus_APPROVAL_STATUS_UNSPECIFIED
	}
}

func approvalStatusFrom(s arbiterv1.ApprovalStatus) state.ApprovalStatus {
	for _, st := range []state.ApprovalStatus{state.ApprovalPending, state.ApprovalApproved, state.ApprovalDenied, state.ApprovalExpired, state.ApprovalConsumed} {
		if approvalStatusTo(st) == s {
			return st
		}
	}
	return ""
}

func kindTo(k state.ApprovalKind) arbiterv1.ApprovalKind {
	switch k {
	case state.KindOperation:
		return arbiterv1.ApprovalKind_APPROVAL_KIND_OPERATION
	case state.KindSessionOpen:
		return arbiterv1.ApprovalKind_APPROVAL_KIND_SESSION_OPEN
	case state.KindSessionRenew:
		return arbiterv1.ApprovalKind_APPROVAL_KIND_SESSION_RENEW
	default:
		return arbiterv1.ApprovalKind_APPROVAL_KIND_UNSPECIFIED
	}
}

func scopeTo(s string) arbiterv1.ApprovalScope {
	switch s {
	case state.ScopeOnce:
		return arbiterv1.ApprovalScope_APPROVAL_SCOPE_ONCE
	case state.ScopeSession:
		return arbiterv1.ApprovalScope_APPROVAL_SCOPE_SESSION
	default:
		return arbiterv1.ApprovalScope_APPROVAL_SCOPE_UNSPECIFIED
	}
}

func scopeFrom(s arbiterv1.ApprovalScope) string {
	switch s {
	case arbiterv1.ApprovalScope_APPROVAL_SCOPE_ONCE:
		return state.ScopeOnce
	case arbiterv1.ApprovalScope_APPROVAL_SCOPE_SESSION:
		return state.ScopeSession
	default:
		return ""
	}
}
