//! Trust policies: which of a peer's tenants and roles this cluster honours, and as
//! which of its own tenants. A policy is checked when it is set (naming the bad
//! field) and applied to every federated token a peer's user presents.

use nova_http::FieldError;

use crate::model::{Role, TrustPolicy};

/// The tenant here a peer's user of `tenant` with `role` acts in, or None when the
/// policy does not honour them. `host` is never honoured.
pub fn honour(policy: &TrustPolicy, tenant: &str, role: Role) -> Option<String> {
    if role == Role::Host {
        return None;
    }
    policy
        .rules
        .iter()
        .find(|r| (r.remote_tenant == "*" || r.remote_tenant == tenant) && r.roles.contains(&role))
        .map(|r| r.local_tenant.clone().unwrap_or_else(|| tenant.to_string()))
}

/// Checks a policy, naming the bad field.
pub fn validate(p: &TrustPolicy) -> Result<(), FieldError> {
    if p.rules.len() > 64 {
        return Err(FieldError::new("trust.rules", "more than 64 rules"));
    }
    for (i, r) in p.rules.iter().enumerate() {
        let f = |n: &str| format!("trust.rules[{i}].{n}");
        if r.remote_tenant != "*" {
            crate::vms::validate_label(&f("remote_tenant"), &r.remote_tenant)?;
        }
        if let Some(t) = &r.local_tenant {
            crate::vms::validate_label(&f("local_tenant"), t)?;
        }
        if r.local_tenant.is_none() && r.remote_tenant == "*" {
            return Err(FieldError::new(
                f("local_tenant"),
                "a rule for any tenant (*) must name the tenant they act in here",
            ));
        }
        if r.roles.is_empty() {
            return Err(FieldError::new(f("roles"), "names no role"));
        }
        if r.roles.contains(&Role::Host) {
            return Err(FieldError::new(
                f("roles"),
                "host credentials never federate",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TrustRule;

    fn rule(remote: &str, local: Option<&str>, roles: &[Role]) -> TrustRule {
        TrustRule {
            remote_tenant: remote.into(),
            local_tenant: local.map(Into::into),
            roles: roles.to_vec(),
        }
    }

    #[test]
    fn a_policy_honours_only_the_tenants_and_roles_it_names() {
        let p = TrustPolicy {
            rules: vec![
                rule("acme", None, &[Role::Viewer, Role::Operator]),
                rule("*", Some("guests"), &[Role::Viewer]),
            ],
        };
        assert_eq!(honour(&p, "acme", Role::Operator).as_deref(), Some("acme"));
        assert_eq!(honour(&p, "acme", Role::Admin), None, "admin not listed");
        assert_eq!(honour(&p, "other", Role::Viewer).as_deref(), Some("guests"));
        assert_eq!(honour(&p, "other", Role::Operator), None);
        assert_eq!(honour(&TrustPolicy::default(), "acme", Role::Viewer), None);
    }

    #[test]
    fn bad_policies_are_refused_naming_the_field() {
        let bad = |r: TrustRule| validate(&TrustPolicy { rules: vec![r] }).unwrap_err().field;
        assert_eq!(bad(rule("acme", None, &[])), "trust.rules[0].roles");
        assert_eq!(
            bad(rule("acme", None, &[Role::Host])),
            "trust.rules[0].roles"
        );
        assert_eq!(
            bad(rule("*", None, &[Role::Viewer])),
            "trust.rules[0].local_tenant"
        );
        assert_eq!(
            bad(rule("a b", None, &[Role::Viewer])),
            "trust.rules[0].remote_tenant"
        );
    }
}
