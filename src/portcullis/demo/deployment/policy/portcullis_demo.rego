# Deployment-wide rules of the demo, evaluated after each tool's own policy: section.
#
# A module can only ADD to a decision: a denial, a need for approval, an obligation. Who may call
# a tool at all is the manifest's allowed_callers; nothing here can allow a call. The input
# document is {principal, tool, arguments, environment, now, session}; see
# portcullis/policy/engine.py. Every finding is {"id": ..., "reason": ...}; the decision cites it
# as rego/<id>, and policy/fixtures/*.yaml make each rule fire at least once.
package portcullis.demo

import rego.v1

sensitive := {"Confidential", "Restricted"}

# Contractors never handle Confidential or Restricted data, whether they send it or get it back.
deny contains {"id": "contractor_sensitive_data", "reason": "contractor_sensitive_data"} if {
	input.principal.attributes.employment_type == "contractor"
	some direction in ["input", "output"]
	input.tool.classification[direction] in sensitive
}

# Any tool that takes a tenant_id argument: it must be the caller's own tenant.
deny contains {"id": "cross_tenant", "reason": "tenant_mismatch"} if {
	is_string(input.arguments.tenant_id)
	input.arguments.tenant_id != object.get(input.principal, "tenant", null)
}

# Trainees need a supervisor's approval for every high-risk call, whatever the amount.
require_approval contains {"id": "trainee_high_risk", "reason": "trainee_needs_approval"} if {
	input.tool.risk == "high"
	"trainee" in object.get(input.principal, "roles", [])
}

# A free-text reason sent to a tool that takes sensitive input can hold personal data: keep it
# out of logs and audit records.
obligations contains {"kind": "redact", "pointer": "/reason"} if {
	input.tool.classification.input in sensitive
	"reason" in object.keys(input.arguments)
}
