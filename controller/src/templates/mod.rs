//! Templates: a tenant's library of named, versioned VM recipes (`name@version`;
//! versions immutable, one of them the default), each with a parameter schema
//! ([`params`]) and a source: an image + spec (instances boot cold) or a golden
//! snapshot (instances are clones restored from it, memory shared copy-on-write,
//! each with its own MAC, hostname and instance id; or boot cold from the spec it
//! was taken of). System templates (the system tenant's) are visible to every
//! tenant; a tenant's own shadow a system one of the same name. Domain only.

pub mod params;

use nova_http::FieldError;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::{
    now_ms, Instantiate, InstantiateMode, NewTemplate, Snapshot, Template, TemplateSource,
    TemplateVersion, Vm, SYSTEM_TENANT,
};
use crate::store::{Object, Objects, StoreError};

impl Object for Template {
    const PREFIX: &'static str = "templates/";
    fn key(&self) -> &str {
        &self.id
    }
    fn set_revision(&mut self, rev: u64) {
        self.revision = rev;
    }
}

fn key(tenant: &str, name: &str) -> String {
    format!("{tenant}/{name}")
}

/// Splits `name[@version]`.
pub fn parse_ref(r: &str) -> std::result::Result<(&str, Option<u32>), FieldError> {
    let (name, version) = match r.split_once('@') {
        Some((n, v)) => {
            let v = v.parse::<u32>().ok().filter(|v| *v > 0).ok_or_else(|| {
                FieldError::new("template", format!("{v:?} is not a version number"))
            })?;
            (n, Some(v))
        }
        None => (r, None),
    };
    nova_hostd_api::validate_id("template", name)?;
    Ok((name, version))
}

/// Adds a version (the first makes the template) in `tenant`; answers the template.
pub async fn create_version(ctx: &Context, tenant: &str, body: NewTemplate) -> Result<Template> {
    nova_hostd_api::validate_id("name", &body.name)?;
    if body
        .description
        .as_ref()
        .is_some_and(|d| d.len() > params::MAX_DESCRIPTION)
    {
        return Err(FieldError::new("description", "too long").into());
    }
    params::validate_schema(&body.parameters)?;
    let base = match &body.source {
        TemplateSource::Image(spec) => {
            crate::vms::validate_spec(spec)
                .map_err(|e| FieldError::new(format!("source.image.{}", e.field), e.problem))?;
            spec.clone()
        }
        TemplateSource::Snapshot(id) => {
            let snap = match ctx.store.read::<Snapshot>(id).await? {
                Some(s) if s.tenant == tenant || tenant == SYSTEM_TENANT => s,
                _ => {
                    return Err(FieldError::new(
                        "source.snapshot",
                        "no such snapshot in this tenant",
                    )
                    .into())
                }
            };
            let clones_fixed = ["vcpus", "mem_mib"];
            if let Some(p) = body
                .parameters
                .iter()
                .find(|p| clones_fixed.contains(&p.name.as_str()))
            {
                return Err(FieldError::new(
                    format!("parameters.{}", p.name),
                    "a clone has its golden snapshot's vCPUs and memory",
                )
                .into());
            }
            snap.spec
        }
    };
    // The defaults must make a valid VM.
    let defaults = params::resolve(
        &body
            .parameters
            .iter()
            .cloned()
            .map(|mut p| {
                p.required = false;
                p
            })
            .collect::<Vec<_>>(),
        &Default::default(),
    )?;
    crate::vms::validate_spec(&params::apply(&base, &defaults))?;
    let id = key(tenant, &body.name);
    loop {
        let existing = ctx.store.read::<Template>(&id).await?;
        let next = existing.as_ref().map_or(1, |t| {
            t.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1
        });
        let version = TemplateVersion {
            version: next,
            description: body.description.clone(),
            parameters: body.parameters.clone(),
            source: body.source.clone(),
            base: base.clone(),
            created_at_ms: now_ms(),
        };
        let r = match existing {
            None => {
                let t = Template {
                    id: id.clone(),
                    tenant: tenant.to_string(),
                    name: body.name.clone(),
                    default_version: 1,
                    versions: vec![version],
                    revision: 0,
                };
                ctx.store.create(&t).await
            }
            Some(mut t) => {
                let rev = t.revision;
                t.versions.push(version);
                if body.make_default {
                    t.default_version = next;
                }
                ctx.store.replace(&t, rev).await
            }
        };
        match r {
            Ok(_) => break,
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let t = ctx.store.must_read::<Template>(&id).await?;
    ctx.events
        .publish(
            "template.version_created",
            tenant,
            &id,
            crate::events::data(&t.versions.last()),
        )
        .await;
    Ok(t)
}

/// The templates `tenant` sees: its own and the system's.
pub async fn list(ctx: &Context, sees: impl Fn(&str) -> bool) -> Result<Vec<Template>> {
    Ok(ctx
        .store
        .list_all::<Template>()
        .await?
        .into_iter()
        .filter(|t| sees(&t.tenant) || t.tenant == SYSTEM_TENANT)
        .collect())
}

/// Template `name` as `tenant` sees it: its own, else the system's.
pub async fn find(ctx: &Context, tenant: &str, name: &str) -> Result<Template> {
    for t in [tenant, SYSTEM_TENANT] {
        if let Some(found) = ctx.store.read::<Template>(&key(t, name)).await? {
            return Ok(found);
        }
    }
    Err(Error::NotFound("template"))
}

/// Version `v` of `t` (its default when None).
pub fn version(t: &Template, v: Option<u32>) -> Result<&TemplateVersion> {
    let want = v.unwrap_or(t.default_version);
    t.versions
        .iter()
        .find(|x| x.version == want)
        .ok_or_else(|| {
            FieldError::new("template", format!("{} has no version {want}", t.name)).into()
        })
}

/// Makes `version` the default of `tenant`'s template `name`.
pub async fn set_default(
    ctx: &Context,
    tenant: &str,
    name: &str,
    version: u32,
) -> Result<Template> {
    let id = key(tenant, name);
    let t = ctx
        .store
        .read::<Template>(&id)
        .await?
        .ok_or(Error::NotFound("template"))?;
    if !t.versions.iter().any(|v| v.version == version) {
        return Err(FieldError::new("version", format!("{name} has no version {version}")).into());
    }
    Ok(ctx
        .store
        .update::<Template, _>(&id, |t| {
            let change = t.default_version != version;
            t.default_version = version;
            change
        })
        .await?)
}

/// Makes a VM of `tenant` from template `reference` (`name[@version]`).
pub async fn instantiate(
    ctx: &Context,
    tenant: &str,
    reference: &str,
    body: Instantiate,
) -> Result<Vm> {
    let (name, v) = parse_ref(reference)?;
    let t = find(ctx, tenant, name).await?;
    let ver = version(&t, v)?;
    let values = params::resolve(&ver.parameters, &body.parameters)?;
    let mut spec = params::apply(&ver.base, &values);
    spec.name = body.name.clone();
    spec.start = true;
    let mode = body.mode.unwrap_or(match ver.source {
        TemplateSource::Snapshot(_) => InstantiateMode::Clone,
        TemplateSource::Image(_) => InstantiateMode::Cold,
    });
    match (&ver.source, mode) {
        (_, InstantiateMode::Cold) => {
            if body.host.is_some() {
                return Err(FieldError::new(
                    "host",
                    "only a clone is placed by hand; the scheduler places cold instances",
                )
                .into());
            }
            for n in &mut spec.nics {
                n.mac = None;
            }
            crate::vms::create(ctx, tenant, spec).await
        }
        (TemplateSource::Image(_), InstantiateMode::Clone) => Err(FieldError::new(
            "mode",
            "this version's source is an image: it has no golden snapshot to clone",
        )
        .into()),
        (TemplateSource::Snapshot(id), InstantiateMode::Clone) => {
            if ver.base.cloud_init.is_none() && spec.cloud_init.is_some() {
                let p = values
                    .keys()
                    .find(|k| ["hostname", "ssh_keys", "user_data"].contains(&k.as_str()));
                return Err(FieldError::new(
                    format!("parameters.{}", p.map_or("hostname", |s| s.as_str())),
                    "the golden snapshot's VM had no guest configuration disk to carry it; make it with cloud_init",
                )
                .into());
            }
            let snap = ctx
                .store
                .read::<Snapshot>(id)
                .await?
                .ok_or_else(|| Error::conflict("the template's golden snapshot is gone"))?;
            crate::vms::validate_spec(&spec)?;
            crate::snapshots::restore::into_new_vm(
                ctx,
                tenant,
                &snap,
                spec,
                body.host.as_deref(),
                true,
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_a_name_and_an_optional_version() {
        assert_eq!(parse_ref("web").unwrap(), ("web", None));
        assert_eq!(parse_ref("web@3").unwrap(), ("web", Some(3)));
        for bad in ["web@", "web@0", "web@x", "@1", "../x@1"] {
            assert_eq!(parse_ref(bad).unwrap_err().field, "template", "{bad}");
        }
    }
}
