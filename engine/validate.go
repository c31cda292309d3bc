package engine

import (
	"fmt"
	"time"
)

// Limits on request fields. Larger values are rejected, never truncated.
const (
	maxIDBytes     = 1024
	maxListEntries = 256
	// MaxTools is how many tools one FilterTools call may carry.
	MaxTools = 2000
)

// InvalidArgumentError is a request the engine refuses to decide. Field is the path of the
// offending field in the request, such as "client.id".
type InvalidArgumentError struct {
	Field  string
	Reason string
}

func (e *InvalidArgumentError) Error() string {
	return e.Field + ": " + e.Reason
}

func invalid(field, format string, args ...any) error {
	return &InvalidArgumentError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

func validateRequest(req *Request) error {
	if req.Operation.Method == "" {
		return invalid("operation.method", "is required")
	}
	if err := validateParties(&req.Client, &req.Subject, &req.Credential); err != nil {
		return err
	}
	if err := validateServer("server", &req.Server); err != nil {
		return err
	}
	if len(req.SessionID) > maxIDBytes {
		return invalid("session_id", "is longer than %d bytes", maxIDBytes)
	}
	if len(req.Operation.Method) > maxIDBytes {
		return invalid("operation.method", "is longer than %d bytes", maxIDBytes)
	}
	if len(req.Operation.Tool) > maxIDBytes {
		return invalid("operation.tool", "is longer than %d bytes", maxIDBytes)
	}
	return nil
}

func validateParties(c *Client, s *Subject, cred *Credential) error {
	if c.ID == "" {
		return invalid("client.id", "is required")
	}
	if len(c.ID) > maxIDBytes {
		return invalid("client.id", "is longer than %d bytes", maxIDBytes)
	}
	if len(s.ID) > maxIDBytes {
		return invalid("subject.id", "is longer than %d bytes", maxIDBytes)
	}
	for _, l := range []struct {
		field string
		vs    []string
	}{{"subject.groups", s.Groups}, {"credential.scopes", cred.Scopes}, {"credential.audience", cred.Audience}} {
		if err := validateList(l.field, l.vs); err != nil {
			return err
		}
	}
	return nil
}

// validateList bounds a list of ids: its entries, and each entry's length (a session keeps its
// scopes for as long as it lives).
func validateList(field string, vs []string) error {
	if len(vs) > maxListEntries {
		return invalid(field, "has %d entries, more than %d", len(vs), maxListEntries)
	}
	for i, v := range vs {
		if len(v) > maxIDBytes {
			return invalid(fmt.Sprintf("%s[%d]", field, i), "is longer than %d bytes", maxIDBytes)
		}
	}
	return nil
}

func validateServer(field string, s *Server) error {
	if s.ID == "" {
		return invalid(field+".id", "is required")
	}
	if len(s.ID) > maxIDBytes {
		return invalid(field+".id", "is longer than %d bytes", maxIDBytes)
	}
	return nil
}

func validateTTL(ttl time.Duration) error {
	if ttl < 0 {
		return invalid("ttl", "must not be negative")
	}
	return nil
}
