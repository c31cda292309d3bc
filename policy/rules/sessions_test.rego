# Sessions: opening, renewal and lifetime ceilings; each rule firing and not firing.
package mcp.sessions_test

import data.mcp_test.fixtures.catalog as fixture_catalog
import data.mcp_test.fixtures.codes
import data.mcp_test.fixtures.codes_of
import data.mcp_test.fixtures.decide
import data.mcp_test.fixtures.decide_limits
import data.mcp_test.fixtures.decide_session_limits
import data.mcp_test.fixtures.limits as fixture_limits
import data.mcp_test.fixtures.open_session
import data.mcp_test.fixtures.renew
import data.mcp_test.fixtures.result
import data.mcp_test.fixtures.with_calls

# An open by client id naming servers.
open_by(client, servers) := object.union(open_session(servers), {"client": {"id": client}})

# The fixture limits with limits.session.unknown_client set to mode.
unknown_client(mode) := object.union(fixture_limits, {"session": {"unknown_client": mode}})

# The fixture limits with a session_open mode for class.
class_open(class, mode) := object.union(fixture_limits, {"trust_classes": {class: {"session_open": mode}}})

renew_codes(req, session_limits) := [r.code | some r in decide_session_limits(req, session_limits).reasons]

# client_unknown

test_client_unknown_requires_approval_when_data_says if {
	d := decide_limits(open_by("stranger", []), unknown_client("approval"))
	d == {
		"result": "require_approval",
		"reasons": [{"code": "client_unknown", "message": "client \"stranger\" is not in the catalog"}],
		"labels": [],
		"obligations": {},
		"approval": {"scope": "session", "ttl_seconds": 60},
		"session": {"max_ttl_seconds": 1800},
	}
	codes_of(decide_limits(object.remove(open_session([]), ["client"]), unknown_client("approval"))) == ["client_unknown"]
}

test_client_unknown_denied_when_data_says if {
	d := decide_limits(open_by("stranger", []), unknown_client("deny"))
	d.result == "deny"
	codes_of(d) == ["client_unknown"]
}

test_client_unknown_allowed_by_default if {
	every mode in ["allow", "ALLOW", null, 1] {
		decide_limits(open_by("stranger", []), unknown_client(mode)).result == "allow"
	}
	result(open_by("stranger", [])) == "allow"
}

test_client_unknown_not_for_known_client if {
	decide_limits(open_by("client-1", []), unknown_client("deny")).result == "allow"
}

test_client_unknown_only_for_session_open if {
	decide_limits(with_calls(0), unknown_client("deny")).result == "allow"
	decide_limits(object.union(renew(0), {"client": {"id": "stranger"}}), object.union(unknown_client("deny"), {"session": {"renewal": "allow"}})).result == "allow"
}

# server_trust_class

test_server_trust_class_requires_approval_for_remote_open_when_data_says if {
	d := decide_limits(open_session(["local", "remote"]), class_open("remote", "approval"))
	d.result == "require_approval"
	d.reasons == [{"code": "server_trust_class", "message": "a session on remote server \"remote\" requires approval"}]
	codes_of(decide_limits(open_session(["untyped"]), class_open("remote", "approval"))) == ["server_trust_class"]
}

test_server_trust_class_denies_when_data_says if {
	d := decide_limits(open_session(["local", "slashed"]), class_open("stdio", "deny"))
	d.result == "deny"
	d.reasons == [{"code": "server_trust_class", "message": "a session on stdio server \"local\" is not allowed"}]
}

test_server_trust_class_not_for_other_classes_or_by_default if {
	decide_limits(open_session(["local"]), class_open("remote", "approval")).result == "allow"
	decide_limits(open_session([]), class_open("remote", "deny")).result == "allow"
	result(open_session(["local", "remote"])) == "allow"
	decide_limits(open_session(["remote"]), class_open("remote", "sometimes")).result == "allow"
	decide_limits(open_session(["ghost"]), class_open("remote", "approval")).reasons == [
		{"code": "server_unknown", "message": "server \"ghost\" is not in the catalog"},
	]
}

test_server_trust_class_only_for_session_open if {
	decide_limits(with_calls(0), class_open("remote", "deny")).result == "allow"
}

# renewal_requires_approval

test_renewal_requires_approval_shape if {
	decide(renew(1)) == {
		"result": "require_approval",
		"reasons": [{"code": "renewal_requires_approval", "message": "session renewal requires approval (renewals so far: 1)"}],
		"labels": [],
		"obligations": {},
		"approval": {"scope": "session", "ttl_seconds": 60},
		"session": {"max_ttl_seconds": 1800},
	}
}

test_renewal_requires_approval_fires_by_default if {
	codes(renew(0)) == ["renewal_requires_approval"]
	every renewal in ["approval", "ALLOW", "Deny", "", true, null, 1, ["allow"]] {
		renew_codes(renew(0), {"renewal": renewal}) == ["renewal_requires_approval"]
	}
	d := data.mcp.decision with input as renew(0) with data.catalog as fixture_catalog with data.limits as {}
	d.reasons == [{"code": "renewal_requires_approval", "message": "session renewal requires approval (renewals so far: 0)"}]
	d.approval == {"scope": "once", "ttl_seconds": 900}
}

test_renewal_requires_approval_not_when_allowed if {
	decide_session_limits(renew(1), {"renewal": "allow"}) == {
		"result": "allow",
		"reasons": [],
		"labels": [],
		"obligations": {},
		"session": {"max_ttl_seconds": 3600},
	}
}

test_renewal_requires_approval_not_when_denied if {
	d := decide_session_limits(renew(0), {"renewal": "deny"})
	d.result == "deny"
	not "renewal_requires_approval" in codes_of(d)
	not d.approval
}

test_renewal_requires_approval_only_for_renew if {
	result(open_session(["remote"])) == "allow"
	result(with_calls(1)) == "allow"
	result(object.union(with_calls(1), {"session": {"renewals": 7}})) == "allow"
}

# renewal_not_allowed

test_renewal_not_allowed_fires if {
	decide_session_limits(renew(0), {"renewal": "deny"}) == {
		"result": "deny",
		"reasons": [{"code": "renewal_not_allowed", "message": "session renewal is not allowed"}],
		"labels": [],
		"obligations": {},
		"session": {"max_ttl_seconds": 3600},
	}
}

test_renewal_not_allowed_not_otherwise if {
	every renewal in ["allow", "approval", "DENY", false] {
		not "renewal_not_allowed" in renew_codes(renew(0), {"renewal": renewal})
	}
	not "renewal_not_allowed" in codes(renew(0))
}

test_renewal_not_allowed_only_for_renew if {
	decide_session_limits(open_session(["remote"]), {"renewal": "deny"}).result == "allow"
	decide_session_limits(with_calls(1), {"renewal": "deny"}).result == "allow"
}

# renewal_limit

test_renewal_limit_fires if {
	decide(renew(2)) == {
		"result": "deny",
		"reasons": [{"code": "renewal_limit", "message": "session has used 2 of its 2 renewals"}],
		"labels": [],
		"obligations": {},
		"session": {"max_ttl_seconds": 1800},
	}
	codes(renew(3)) == ["renewal_limit"]
	renew_codes(renew(0), {"max_renewals": 0}) == ["renewal_limit"]
	renew_codes(renew(1), {"max_renewals": 1, "renewal": "allow"}) == ["renewal_limit"]
}

test_renewal_limit_wins_over_approval if {
	d := decide(renew(2))
	d.result == "deny"
	not d.approval
	not "renewal_requires_approval" in codes(renew(2))
}

test_renewal_limit_reported_with_renewal_not_allowed if {
	decide_session_limits(renew(5), {"max_renewals": 2, "renewal": "deny"}).reasons == [
		{"code": "renewal_limit", "message": "session has used 5 of its 2 renewals"},
		{"code": "renewal_not_allowed", "message": "session renewal is not allowed"},
	]
}

test_renewal_limit_not_below_limit if {
	codes(renew(0)) == ["renewal_requires_approval"]
	codes(renew(1)) == ["renewal_requires_approval"]
	decide_session_limits(renew(1), {"max_renewals": 2, "renewal": "allow"}).result == "allow"
}

test_renewal_limit_not_without_max_renewals if {
	every session_limits in [{}, {"max_renewals": "2"}, {"max_renewals": null}] {
		renew_codes(renew(1000), session_limits) == ["renewal_requires_approval"]
	}
}

test_renewal_limit_counts_missing_renewals_as_none if {
	no_count := json.remove(renew(0), ["session/renewals"])
	codes(no_count) == ["renewal_requires_approval"]
	renew_codes(no_count, {"max_renewals": 0}) == ["renewal_limit"]
	codes(object.union(renew(0), {"session": {"renewals": "5"}})) == ["renewal_requires_approval"]
}

test_renewal_limit_only_for_renew if {
	result(object.union(with_calls(1), {"session": {"renewals": 9}})) == "allow"
	result(object.union(open_session(["remote"]), {"session": {"renewals": 9}})) == "allow"
}

test_renew_not_checked_against_catalog_servers if {
	every server in [{}, {"id": ""}, {"id": "ghost"}, null] {
		codes(object.union(renew(0), {"server": server})) == ["renewal_requires_approval"]
	}
	codes(object.remove(renew(0), ["server"])) == ["renewal_requires_approval"]
	ghosts := object.union(renew(0), {"session_request": {"servers": ["ghost"]}, "session": {"servers": ["ghost"]}})
	codes(ghosts) == ["renewal_requires_approval"]
}

test_renew_not_subject_to_mcp_operation_rules if {
	req := object.union(renew(0), {
		"server": {"id": "remote"},
		"credential": {"audience": ["https://other.example.com"]},
		"operation": {"tool": "wipe"},
		"session": {"calls": {"total": 99}},
	})
	codes(req) == ["renewal_requires_approval"]
	decide(req).labels == []
}

# Lifetime ceilings

test_session_max_ttl_from_limits if {
	every ttl in [1, 60, 86400] {
		decide_session_limits(open_session([]), {"max_ttl_seconds": ttl}).session == {"max_ttl_seconds": ttl}
	}
}

test_session_max_ttl_defaults_when_absent_or_invalid if {
	every session_limits in [
		{},
		{"max_ttl_seconds": 0},
		{"max_ttl_seconds": -60},
		{"max_ttl_seconds": 1.5},
		{"max_ttl_seconds": "1800"},
		{"max_ttl_seconds": null},
	] {
		decide_session_limits(open_session([]), session_limits).session == {"max_ttl_seconds": 3600}
		decide_session_limits(renew(0), session_limits).session == {"max_ttl_seconds": 3600}
	}
	d := data.mcp.decision with input as renew(0) with data.catalog as fixture_catalog with data.limits as {}
	d.session == {"max_ttl_seconds": 3600}
}

test_session_max_ttl_lowered_by_trust_class_of_servers_involved if {
	classes := object.union(fixture_limits, {"trust_classes": {"remote": {"max_ttl_seconds": 600}, "stdio": {"max_ttl_seconds": 1200}}})
	decide_limits(open_session(["local"]), classes).session == {"max_ttl_seconds": 1200}
	decide_limits(open_session(["local", "remote"]), classes).session == {"max_ttl_seconds": 600}
	decide_limits(open_session(["untyped"]), classes).session == {"max_ttl_seconds": 600}
	decide_limits(renew(0), classes).session == {"max_ttl_seconds": 600}
}

test_session_max_ttl_not_raised_by_trust_class if {
	classes := object.union(fixture_limits, {"trust_classes": {"stdio": {"max_ttl_seconds": 7200}}})
	decide_limits(open_session(["local"]), classes).session == {"max_ttl_seconds": 1800}
}

test_session_max_ttl_ignores_classes_not_involved_or_invalid if {
	classes := object.union(fixture_limits, {"trust_classes": {"remote": {"max_ttl_seconds": 600}, "stdio": {"max_ttl_seconds": "60"}}})
	decide_limits(open_session([]), classes).session == {"max_ttl_seconds": 1800}
	decide_limits(open_session(["local"]), classes).session == {"max_ttl_seconds": 1800}
	decide_limits(open_session(["ghost"]), classes).session == {"max_ttl_seconds": 1800}
}
