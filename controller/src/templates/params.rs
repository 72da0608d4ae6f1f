//! Template parameters: which ones a template may declare (each sets one thing of
//! the VM: `vcpus`, `mem_mib`, `hostname`, `ssh_keys`, `user_data`), checking a
//! schema when a version is made, and checking and applying the values an
//! instantiation gives. Every refusal names the parameter (`parameters.<name>`).

use std::collections::BTreeMap;

use nova_http::FieldError;

use crate::model::{CloudInit, ParamKind, ParamValue, TemplateParam, VmSpec};

/// The parameters a template may declare, and the kind each must be.
pub const KNOWN: [(&str, ParamKind); 5] = [
    ("vcpus", ParamKind::Integer),
    ("mem_mib", ParamKind::Integer),
    ("hostname", ParamKind::Hostname),
    ("ssh_keys", ParamKind::SshKeys),
    ("user_data", ParamKind::Text),
];

/// Most parameters per template.
pub const MAX_PARAMS: usize = KNOWN.len();
/// Longest description.
pub const MAX_DESCRIPTION: usize = 1024;

/// Checks a version's parameter declarations (and that their defaults are valid).
pub fn validate_schema(ps: &[TemplateParam]) -> Result<(), FieldError> {
    if ps.len() > MAX_PARAMS {
        return Err(FieldError::new(
            "parameters",
            format!("more than {MAX_PARAMS}"),
        ));
    }
    for (i, p) in ps.iter().enumerate() {
        let at = |f: &str| format!("parameters[{i}].{f}");
        let Some((_, kind)) = KNOWN.iter().find(|(n, _)| *n == p.name) else {
            let names: Vec<&str> = KNOWN.iter().map(|k| k.0).collect();
            return Err(FieldError::new(
                at("name"),
                format!(
                    "{:?} is not a parameter a template can set (one of {})",
                    p.name,
                    names.join(", ")
                ),
            ));
        };
        if ps[..i].iter().any(|q| q.name == p.name) {
            return Err(FieldError::new(at("name"), "declared twice"));
        }
        if p.kind != *kind {
            return Err(FieldError::new(
                at("kind"),
                format!("{} is a {kind:?} parameter", p.name),
            ));
        }
        if p.description
            .as_ref()
            .is_some_and(|d| d.len() > MAX_DESCRIPTION)
        {
            return Err(FieldError::new(at("description"), "too long"));
        }
        if (p.min.is_some() || p.max.is_some()) && p.kind != ParamKind::Integer {
            return Err(FieldError::new(at("min"), "only integers have bounds"));
        }
        if let (Some(lo), Some(hi)) = (p.min, p.max) {
            if lo > hi {
                return Err(FieldError::new(at("min"), "greater than max"));
            }
        }
        if let Some(d) = &p.default {
            check(p, d).map_err(|why| FieldError::new(at("default"), why))?;
        }
    }
    Ok(())
}

/// Whether `v` is a valid value of `p`; why not otherwise.
fn check(p: &TemplateParam, v: &ParamValue) -> Result<(), String> {
    match (p.kind, v) {
        (ParamKind::Integer, ParamValue::Integer(n)) => {
            let (lo, hi) = (p.min.unwrap_or(0), p.max.unwrap_or(u64::MAX));
            if *n < lo || *n > hi {
                return Err(format!("{n} is out of range {lo}..={hi}"));
            }
            let spec_ok = match p.name.as_str() {
                "vcpus" => (1..=u64::from(nova_hostd_api::MAX_VCPUS)).contains(n),
                "mem_mib" => {
                    (nova_hostd_api::MIN_MEM_MIB..=nova_hostd_api::MAX_MEM_MIB).contains(n)
                }
                _ => true,
            };
            if !spec_ok {
                return Err(format!("{n} is not a valid {}", p.name));
            }
            Ok(())
        }
        (ParamKind::Hostname, ParamValue::Text(h)) => {
            if h.len() <= 63 && nova_hostd_api::is_hostname(h) {
                Ok(())
            } else {
                Err(format!("{h:?} is not a hostname"))
            }
        }
        (ParamKind::SshKeys, ParamValue::List(keys)) => {
            if keys.len() > nova_hostd_api::MAX_SSH_KEYS {
                return Err("too many keys".into());
            }
            match keys.iter().position(|k| !nova_hostd_api::is_ssh_key(k)) {
                Some(i) => Err(format!("key {i} is not an OpenSSH public key line")),
                None => Ok(()),
            }
        }
        (ParamKind::Text, ParamValue::Text(t)) => {
            if t.len() > nova_hostd_api::MAX_CLOUD_INIT_DOC || t.contains('\0') {
                Err("too long or contains NUL".into())
            } else {
                Ok(())
            }
        }
        (kind, _) => Err(format!(
            "must be {}",
            match kind {
                ParamKind::Integer => "an integer",
                ParamKind::Hostname | ParamKind::Text => "a string",
                ParamKind::SshKeys => "a list of strings",
            }
        )),
    }
}

/// The value of every declared parameter: the given one, else its default; refuses
/// an unknown, missing or invalid value, naming it.
pub fn resolve(
    ps: &[TemplateParam],
    given: &BTreeMap<String, ParamValue>,
) -> Result<BTreeMap<String, ParamValue>, FieldError> {
    if let Some(unknown) = given.keys().find(|k| !ps.iter().any(|p| &p.name == *k)) {
        return Err(FieldError::new(
            format!("parameters.{unknown}"),
            "not a parameter of this template",
        ));
    }
    let mut out = BTreeMap::new();
    for p in ps {
        let field = format!("parameters.{}", p.name);
        let v = match (given.get(&p.name), &p.default) {
            (Some(v), _) => v.clone(),
            (None, Some(d)) => d.clone(),
            (None, None) if p.required => return Err(FieldError::new(field, "required")),
            (None, None) => continue,
        };
        check(p, &v).map_err(|why| FieldError::new(&field, why))?;
        out.insert(p.name.clone(), v);
    }
    Ok(out)
}

fn ci(s: &mut VmSpec) -> &mut CloudInit {
    s.cloud_init.get_or_insert_with(Default::default)
}

/// `base` with the parameter values applied.
pub fn apply(base: &VmSpec, values: &BTreeMap<String, ParamValue>) -> VmSpec {
    let mut spec = base.clone();
    for (name, v) in values {
        match (name.as_str(), v) {
            ("vcpus", ParamValue::Integer(n)) => spec.vcpus = *n as u8,
            ("mem_mib", ParamValue::Integer(n)) => spec.mem_mib = *n,
            ("hostname", ParamValue::Text(h)) => ci(&mut spec).hostname = Some(h.clone()),
            ("ssh_keys", ParamValue::List(k)) => ci(&mut spec).ssh_authorized_keys = k.clone(),
            ("user_data", ParamValue::Text(u)) => ci(&mut spec).user_data = Some(u.clone()),
            _ => {}
        }
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, kind: ParamKind) -> TemplateParam {
        TemplateParam {
            name: name.into(),
            kind,
            description: None,
            default: None,
            required: false,
            min: None,
            max: None,
        }
    }

    #[test]
    fn schemas_name_the_bad_declaration() {
        let field = |ps: Vec<TemplateParam>| validate_schema(&ps).unwrap_err().field;
        assert_eq!(
            field(vec![p("cpus", ParamKind::Integer)]),
            "parameters[0].name"
        );
        assert_eq!(
            field(vec![
                p("vcpus", ParamKind::Integer),
                p("hostname", ParamKind::Integer)
            ]),
            "parameters[1].kind"
        );
        let mut d = p("vcpus", ParamKind::Integer);
        d.max = Some(4);
        d.default = Some(ParamValue::Integer(8));
        assert_eq!(field(vec![d]), "parameters[0].default");
    }

    #[test]
    fn values_are_checked_defaulted_and_applied() {
        let mut cpus = p("vcpus", ParamKind::Integer);
        cpus.max = Some(2);
        cpus.default = Some(ParamValue::Integer(1));
        let mut host = p("hostname", ParamKind::Hostname);
        host.required = true;
        let ps = vec![cpus, host];
        let given = |pairs: &[(&str, ParamValue)]| -> BTreeMap<String, ParamValue> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect()
        };
        let err = |g| resolve(&ps, &g).unwrap_err().field;
        assert_eq!(err(given(&[])), "parameters.hostname");
        assert_eq!(
            err(given(&[("hostname", ParamValue::Text("a_b".into()))])),
            "parameters.hostname"
        );
        assert_eq!(
            err(given(&[
                ("hostname", ParamValue::Text("a".into())),
                ("vcpus", ParamValue::Integer(3))
            ])),
            "parameters.vcpus"
        );
        assert_eq!(
            err(given(&[
                ("hostname", ParamValue::Text("a".into())),
                ("vcpus", ParamValue::Text("2".into()))
            ])),
            "parameters.vcpus"
        );
        assert_eq!(
            err(given(&[
                ("hostname", ParamValue::Text("a".into())),
                ("color", ParamValue::Integer(1))
            ])),
            "parameters.color"
        );
        let v = resolve(
            &ps,
            &given(&[("hostname", ParamValue::Text("web-1".into()))]),
        )
        .unwrap();
        let spec = apply(&VmSpec::new("t", "/k"), &v);
        assert_eq!(spec.vcpus, 1);
        assert_eq!(spec.cloud_init.unwrap().hostname.as_deref(), Some("web-1"));
    }
}
