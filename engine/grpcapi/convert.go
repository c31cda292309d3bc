package grpcapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/arbiter-mcp/arbiter/engine"
	"github.com/arbiter-mcp/arbiter/engine/state"
	arbiterv1 "github.com/arbiter-mcp/arbiter/proto/arbiter/v1"
)

func transportName(t arbiterv1.Transport) string {
	switch t {
	case arbiterv1.Transport_TRANSPORT_STDIO:
		return "stdio"
	case arbiterv1.Transport_TRANSPORT_REMOTE:
		return "remote"
	default:
		return ""
	}
}

func clientFrom(c *arbiterv1.Client) engine.Client {
	return engine.Client{ID: c.GetId(), Name: c.GetName(), Version: c.GetVersion(), Transport: transportName(c.GetTransport())}
}

func serverFrom(s *arbiterv1.Server) engine.Server {
	return engine.Server{ID: s.GetId(), Resource: s.GetResource(), Transport: transportName(s.GetTransport()), CommandDigest: s.GetCommandDigest()}
}

func credentialFrom(c *arbiterv1.Credential) engine.Credential {
	cred := engine.Credential{Scopes: c.GetScopes(), Audience: c.GetAudience(), Issuer: c.GetIssuer(), ClientID: c.GetClientId()}
	if c.GetExpiresAt() != nil {
		cred.ExpiresAt = c.GetExpiresAt().AsTime()
	}
	return cred
}

func annotationsFrom(a *arbiterv1.ToolAnnotations) engine.Annotations {
	if a == nil {
		return engine.Annotations{}
	}
	return engine.Annotations{ReadOnly: a.ReadOnlyHint, Destructive: a.DestructiveHint, Idempotent: a.IdempotentHint, OpenWorld: a.OpenWorldHint}
}

// limits are the size checks the service applies before the engine sees a request.
type limits struct {
	argumentsBytes int
	contextBytes   int
}

// subjectFrom converts the subject, checking its free-form attributes.
func (l limits) subjectFrom(s *arbiterv1.Subject) (engine.Subject, error) {
	attrs, err := l.lazyStruct("subject.attributes", s.GetAttributes(), l.contextBytes)
	if err != nil {
		return engine.Subject{}, err
	}
	return engine.Subject{ID: s.GetId(), Groups: s.GetGroups(), AttributesFrom: attrs}, nil
}

// structFrom converts a Struct field, refusing one larger than max bytes on the wire.
func (l limits) structFrom(field string, s *structpb.Struct, max int) (map[string]any, error) {
	if err := l.checkStruct(field, s, max); err != nil || s == nil {
		return nil, err
	}
	return s.AsMap(), nil
}

// lazyStruct checks a Struct field as structFrom does and returns its conversion for the
// engine to make only if the policy reads it (nil for none). A Struct always converts: its
// values are JSON's.
func (l limits) lazyStruct(field string, s *structpb.Struct, max int) (func() map[string]any, error) {
	if err := l.checkStruct(field, s, max); err != nil || s == nil {
		return nil, err
	}
	return s.AsMap, nil
}

// checkStruct refuses a Struct larger than max bytes on the wire.
func (l limits) checkStruct(field string, s *structpb.Struct, max int) error {
	if n := structSize(s); n > max {
		return invalidArgument(field, fmt.Sprintf("is %d bytes, more than the limit of %d", n, max))
	}
	return nil
}

// argumentsFrom decodes the tool arguments from either form, which must be a JSON object.
func (l limits) argumentsFrom(op *arbiterv1.Operation) (map[string]any, error) {
	switch a := op.GetArgs().(type) {
	case *arbiterv1.Operation_Arguments:
		return l.structFrom("operation.arguments", a.Arguments, l.argumentsBytes)
	case *arbiterv1.Operation_ArgumentsJson:
		raw := a.ArgumentsJson
		if len(raw) > l.argumentsBytes {
			return nil, invalidArgument("operation.arguments_json", fmt.Sprintf("is %d bytes, more than the limit of %d", len(raw), l.argumentsBytes))
		}
		obj, err := decodeJSONObject(raw)
		switch {
		case errors.Is(err, errTrailing) || errors.Is(err, errNotObject):
			return nil, invalidArgument("operation.arguments_json", err.Error())
		case err != nil:
			return nil, invalidArgument("operation.arguments_json", "is not valid JSON: "+err.Error())
		}
		return obj, nil
	default:
		return nil, nil
	}
}

func reasonsTo(rs []engine.Reason) []*arbiterv1.Reason {
	out := make([]*arbiterv1.Reason, len(rs))
	for i, r := range rs {
		out[i] = &arbiterv1.Reason{Code: r.Code, Message: r.Message}
	}
	return out
}

func outcomeTo(o engine.Outcome) arbiterv1.Decision {
	switch o {
	case engine.Allow:
		return arbiterv1.Decision_DECISION_ALLOW
	case engine.RequireApproval:
		return arbiterv1.Decision_DECISION_REQUIRE_APPROVAL
	default:
		return arbiterv1.Decision_DECISION_DENY
	}
}

// obligationsTo converts the policy's obligations. They come from Rego with JSON numbers, so
// they take a JSON round trip rather than structpb.NewStruct.
func obligationsTo(m map[string]any) (*structpb.Struct, error) {
	if len(m) == 0 {
		return nil, nil
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode obligations: %w", err)
	}
	s := &structpb.Struct{}
	if err := s.UnmarshalJSON(raw); err != nil {
		return nil, fmt.Errorf("convert obligations: %w", err)
	}
	return s, nil
}

func statusTo(s state.Status) arbiterv1.SessionStatus {
	switch s {
	case state.StatusActive:
		return arbiterv1.SessionStatus_SESSION_STATUS_ACTIVE
	case state.StatusPendingApproval:
		return arbiterv1.SessionStatus_SESSION_STATUS_PENDING_APPROVAL
	case state.StatusClosed:
		return arbiterv1.SessionStatus_SESSION_STATUS_CLOSED
	case state.StatusRevoked:
		return arbiterv1.SessionStatus_SESSION_STATUS_REVOKED
	case state.StatusExpired:
		return arbiterv1.SessionStatus_SESSION_STATUS_EXPIRED
	default:
		return arbiterv1.SessionStatus_SESSION_STATUS_UNSPECIFIED
	}
}

func statusFrom(s arbiterv1.SessionStatus) state.Status {
	switch s {
	case arbiterv1.SessionStatus_SESSION_STATUS_ACTIVE:
		return state.StatusActive
	case arbiterv1.SessionStatus_SESSION_STATUS_PENDING_APPROVAL:
		return state.StatusPendingApproval
	case arbiterv1.SessionStatus_SESSION_STATUS_CLOSED:
		return state.StatusClosed
	case arbiterv1.SessionStatus_SESSION_STATUS_REVOKED:
		return state.StatusRevoked
	case arbiterv1.SessionStatus_SESSION_STATUS_EXPIRED:
		return state.StatusExpired
	default:
		return ""
	}
}

func timeTo(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func sessionTo(si *engine.SessionInfo) *arbiterv1.Session {
	s, u := si.Session, si.Usage
	out := &arbiterv1.Session{
		Id:             s.ID,
		Status:         statusTo(si.Status),
		ClientId:       s.ClientID,
		SubjectId:      s.SubjectID,
		Servers:        s.Servers,
		Scopes:         s.Scopes,
		CreatedAt:      timeTo(s.CreatedAt),
		ExpiresAt:      timeTo(s.ExpiresAt),
		Renewals:       uint32(s.Renewals),
		EndReason:      s.EndReason,
		EndedAt:        timeTo(s.EndedAt),
		PolicyRevision: s.PolicyRevision,
	}
	if u != nil {
		out.CallsTotal = u.Total
		out.CallsByServer = u.ByServer()
		out.Labels = u.Labels
		if byTool := u.ByTool(); len(byTool) > 0 {
			out.CallsByTool = make(map[string]*arbiterv1.ToolCalls, len(byTool))
			for srv, tools := range byTool {
				out.CallsByTool[srv] = &arbiterv1.ToolCalls{Tools: tools}
			}
		}
		for _, h := range u.History {
			out.History = append(out.History, &arbiterv1.HistoryEntry{Server: h.Server, Tool: h.Tool, Method: h.Method, At: timeTo(h.At)})
		}
	}
	return out
}
