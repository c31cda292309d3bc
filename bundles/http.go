package bundles

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// Authorizer decides who may change bundles: the composition root adapts the service's
// bearer-token roles. ok is false for a missing or unknown token.
type Authorizer interface {
	Authorize(header string) (who string, admin bool, ok bool)
}

// Handler serves the bundle API:
//
//	PUT    /v1/bundles/{name}           push a .tar.gz bundle
//	GET    /v1/bundles                  list active bundles
//	GET    /v1/bundles/{name}           one bundle, with the revisions kept for rollback
//	POST   /v1/bundles/{name}/rollback  back to the previous revision, or ?revision=R
//	DELETE /v1/bundles/{name}           stop serving a bundle
//
// Every route needs an admin token: none is 401, a gateway's is 403, and nothing changes.
func Handler(m *Manager, auth Authorizer) http.Handler {
	h := &handler{m: m, auth: auth}
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /v1/bundles/{name}", h.admin(h.push))
	mux.HandleFunc("GET /v1/bundles", h.admin(h.list))
	mux.HandleFunc("GET /v1/bundles/{name}", h.admin(h.get))
	mux.HandleFunc("POST /v1/bundles/{name}/rollback", h.admin(h.rollback))
	mux.HandleFunc("DELETE /v1/bundles/{name}", h.admin(h.delete))
	return mux
}

type handler struct {
	m    *Manager
	auth Authorizer
}

func (h *handler) admin(next func(w http.ResponseWriter, r *http.Request, who string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if who, ok := authorizeAdmin(h.auth, w, r); ok {
			next(w, r, who)
		}
	}
}

// AdminOnly serves next to callers auth says are admins; others get 401 or 403 with a JSON
// error, as on the bundle API.
func AdminOnly(auth Authorizer, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := authorizeAdmin(auth, w, r); ok {
			next.ServeHTTP(w, r)
		}
	})
}

// authorizeAdmin answers 401 or 403 and returns false unless the caller is an admin.
func authorizeAdmin(auth Authorizer, w http.ResponseWriter, r *http.Request) (string, bool) {
	who, admin, ok := auth.Authorize(r.Header.Get("Authorization"))
	switch {
	case !ok:
		w.Header().Set("WWW-Authenticate", `Bearer realm="arbiter"`)
		writeError(w, http.StatusUnauthorized, "an admin bearer token is required (Authorization: Bearer TOKEN)", nil)
		return "", false
	case !admin:
		writeError(w, http.StatusForbidden, fmt.Sprintf("%q is not an admin: this needs the admin role", who), nil)
		return "", false
	}
	return who, true
}

// pushResponse is the answer to a successful push, rollback or delete.
type pushResponse struct {
	Bundle         *Status `json:"bundle,omitempty"`
	PolicyRevision string  `json:"policy_revision"`
}

func (h *handler) push(w http.ResponseWriter, r *http.Request, who string) {
	limit := h.m.cfg.Limits.CompressedBytes
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		writeError(w, http.StatusRequestEntityTooLarge, "bundle rejected", []Problem{{Kind: KindSize, Message: fmt.Sprintf("body is larger than %d bytes", limit)}})
		return
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "could not read the body: "+err.Error(), nil)
		return
	}
	st, err := h.m.Push(r.Context(), r.PathValue("name"), raw, who)
	h.answer(w, &st, err)
}

func (h *handler) rollback(w http.ResponseWriter, r *http.Request, who string) {
	st, err := h.m.Rollback(r.Context(), r.PathValue("name"), r.URL.Query().Get("revision"), who)
	h.answer(w, &st, err)
}

func (h *handler) delete(w http.ResponseWriter, r *http.Request, _ string) {
	_, err := h.m.Delete(r.Context(), r.PathValue("name"))
	h.answer(w, nil, err)
}

func (h *handler) list(w http.ResponseWriter, _ *http.Request, _ string) {
	writeJSON(w, http.StatusOK, map[string]any{"bundles": h.m.List(), "policy_revision": h.m.Revision()})
}

func (h *handler) get(w http.ResponseWriter, r *http.Request, _ string) {
	st, err := h.m.Get(r.PathValue("name"))
	if err != nil {
		h.answer(w, nil, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (h *handler) answer(w http.ResponseWriter, st *Status, err error) {
	var rej *RejectedError
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, pushResponse{Bundle: st, PolicyRevision: h.m.Revision()})
	case errors.As(err, &rej):
		code := http.StatusBadRequest
		for _, p := range rej.Problems {
			if p.Kind == KindStorage {
				code = http.StatusInternalServerError
			}
		}
		writeError(w, code, "bundle rejected; the active policy is unchanged", rej.Problems)
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrNoRevision):
		writeError(w, http.StatusNotFound, err.Error(), nil)
	case errors.Is(err, ErrBadName):
		writeError(w, http.StatusBadRequest, err.Error(), nil)
	default:
		writeError(w, http.StatusInternalServerError, err.Error(), nil)
	}
}

func writeError(w http.ResponseWriter, code int, msg string, problems []Problem) {
	if problems == nil {
		problems = []Problem{}
	}
	writeJSON(w, code, map[string]any{"error": msg, "problems": problems})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
